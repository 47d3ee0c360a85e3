"""``peerlab-tui asn`` and ``peerlab-tui lease ...`` through click's CliRunner on an in-memory gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from peerlab_tui._cli.lease import ClientFactory, format_remaining, lease_table
from peerlab_tui.cli import main
from peerlab_tui.core.errors import ExitCode
from peerlab_tui.core.models import LeaseRecord
from tests.client._fakes import FakeGateway, Recorder, error, sequence

URL = "http://gateway.test"


@pytest.fixture(autouse=True)
def _no_ambient_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own PEERLAB_* settings must not leak into these tests."""
    for name in ("PEERLAB_GATEWAY_URL", "PEERLAB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def run(
    transport: httpx.AsyncBaseTransport,
    *args: str,
    env: dict[str, str | None] | None = None,
    flags: bool = True,
) -> Result:
    """Invoke ``peerlab-tui ARGS`` with the client's transport replaced by ``transport``."""
    argv = list(args)
    if flags:
        argv += ["--gateway", URL, "--token", "tok-alice"]
    factory = ClientFactory(transport, backoff=0)
    return CliRunner().invoke(main, argv, obj=factory, env=env, catch_exceptions=False)


def out_json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_asn_json_and_sticky() -> None:
    gw = FakeGateway()
    first = run(gw.transport, "asn", "--json")
    second = run(gw.transport, "asn")
    assert first.exit_code == 0, first.stderr
    assert out_json(first) == {"asn": 65001, "message": "ASN assigned successfully"}
    assert second.stdout.strip() == "ASN 65001 (ASN already assigned)"


def test_lease_request_asks_for_an_asn_first_and_says_so() -> None:
    gw = FakeGateway()
    result = run(gw.transport, "lease", "request", "--hours", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert "no ASN yet" in result.stderr
    data = out_json(result)
    assert data["asn"] == 65001
    assert data["lease"]["prefix"] == "2001:db8:1000::/48"
    assert set(data["lease"]) >= {"prefix", "start_time", "end_time", "message"}
    assert [(r.method, r.url.path) for r in gw.recorder.requests] == [
        ("GET", "/api/user/info"),
        ("POST", "/api/user/asn"),
        ("POST", "/api/user/prefix"),
    ]


def test_lease_request_with_an_asn_is_quiet_and_human() -> None:
    gw = FakeGateway()
    gw.asn = 65009
    result = run(gw.transport, "lease", "request", "--hours", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    line = result.stdout.strip()
    assert line.startswith("AS65009: leased 2001:db8:1000::/48 until ")
    assert line.endswith("(3h 00m left)")


def test_lease_list_shows_remaining_time_and_history() -> None:
    gw = FakeGateway()
    assert run(gw.transport, "lease", "request", "--hours", "5").exit_code == 0
    assert run(gw.transport, "lease", "request", "--hours", "1").exit_code == 0
    assert run(gw.transport, "lease", "release", "2001:db8:1001::/48").exit_code == 0
    listing = run(gw.transport, "lease", "list")
    assert listing.exit_code == 0
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split() == ["PREFIX", "STATE", "START", "END", "REMAINING"]
    assert len(lines) == 2 and lines[1].startswith("2001:db8:1000::/48  active")
    assert lines[1].endswith("5h 00m")
    history = run(gw.transport, "lease", "list", "--history", "--json")
    states = {row["prefix"]: row["state"] for row in out_json(history)["leases"]}
    assert states == {"2001:db8:1000::/48": "active", "2001:db8:1001::/48": "released"}


def test_lease_list_empty() -> None:
    gw = FakeGateway()
    result = run(gw.transport, "lease", "list")
    assert (result.exit_code, result.stdout) == (0, "no active leases\n")
    assert out_json(run(gw.transport, "lease", "list", "--json")) == {"leases": []}


def test_release_and_renew_json_shapes() -> None:
    gw = FakeGateway()
    granted = out_json(run(gw.transport, "lease", "request", "--hours", "1", "--json"))["lease"]
    renewed = run(gw.transport, "lease", "renew", "2001:DB8:1000::/48", "--hours", "2", "--json")
    assert renewed.exit_code == 0, renewed.stderr
    end = datetime.fromisoformat(out_json(renewed)["end_time"])
    assert end - datetime.fromisoformat(granted["end_time"]) == timedelta(hours=2)
    released = run(gw.transport, "lease", "release", "2001:db8:1000:0::/48", "--json")
    assert out_json(released) == {"released": "2001:db8:1000::/48"}
    assert gw.leases == {}


def test_renew_human_line() -> None:
    gw = FakeGateway()
    run(gw.transport, "lease", "request", "--hours", "1")
    result = run(gw.transport, "lease", "renew", "2001:db8:1000::/48", "--hours", "1")
    assert result.stdout.startswith("renewed 2001:db8:1000::/48 until ")


@pytest.mark.parametrize(
    ("setup", "args", "code", "needle"),
    [
        ("full", ["lease", "request", "--hours", "1"], ExitCode.REFUSED, "Maximum lease limit reached (1/1)"),
        ("empty-pool", ["lease", "request", "--hours", "1"], ExitCode.EXHAUSTED, "No available prefixes"),
        ("", ["lease", "release", "2001:db8:9999::/48"], ExitCode.NOT_FOUND, "not found"),
        ("", ["lease", "renew", "2001:db8:9999::/48", "--hours", "1"], ExitCode.NOT_FOUND, "not found"),
    ],
)
def test_gateway_refusals_have_their_exit_codes(setup: str, args: list[str], code: int, needle: str) -> None:
    gw = FakeGateway(max_leases=1 if setup == "full" else 2, pool=0 if setup == "empty-pool" else 3)
    if setup == "full":
        assert run(gw.transport, "lease", "request", "--hours", "1").exit_code == 0
    result = run(gw.transport, *args)
    assert result.exit_code == code
    assert needle in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    as_json = run(gw.transport, *args, "--json")
    assert as_json.exit_code == code
    assert out_json(as_json)["exit_code"] == code


def test_wrong_token_is_exit_3() -> None:
    gw = FakeGateway(token="the-right-one")
    result = run(gw.transport, "lease", "list", "--json")
    assert result.exit_code == ExitCode.AUTH
    assert out_json(result)["error"] == "AuthenticationError"


def test_unreachable_gateway_is_exit_7() -> None:
    rec = Recorder(sequence(httpx.ConnectError("Connection refused")))
    result = run(rec.transport, "asn")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach the gateway at http://gateway.test" in result.stderr
    assert rec.calls == 3  # the ASN request is idempotent: retried twice


@pytest.mark.parametrize(
    "args",
    [
        ["lease", "release", "2001:db8::1/48"],
        ["lease", "release", "not-a-prefix"],
        ["lease", "renew", "192.0.2.0/24", "--hours", "1"],
        ["lease", "request", "--hours", "0"],
        ["lease", "renew", "2001:db8::/48", "--hours", "-3"],
    ],
)
def test_bad_input_is_exit_2_and_sends_nothing(args: list[str]) -> None:
    rec = Recorder(sequence(error(500, "must not be called")))
    result = run(rec.transport, *args)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("error: ")
    assert rec.calls == 0


def test_environment_supplies_the_connection() -> None:
    gw = FakeGateway()
    env: dict[str, str | None] = {"PEERLAB_GATEWAY_URL": URL, "PEERLAB_TOKEN": "tok-alice"}
    result = run(gw.transport, "asn", "--json", env=env, flags=False)
    assert result.exit_code == 0, result.stderr
    assert str(gw.recorder.requests[0].url) == URL + "/api/user/asn"


def test_flags_win_over_the_environment() -> None:
    gw = FakeGateway()
    env: dict[str, str | None] = {"PEERLAB_GATEWAY_URL": "http://elsewhere.test", "PEERLAB_TOKEN": "stale"}
    result = run(gw.transport, "asn", env=env)
    assert result.exit_code == 0, result.stderr
    assert gw.recorder.requests[0].url.host == "gateway.test"
    assert gw.recorder.requests[0].headers["Authorization"] == "Bearer tok-alice"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PEERLAB_TOKEN": "tok"}, "PEERLAB_GATEWAY_URL"),
        ({"PEERLAB_GATEWAY_URL": URL}, "PEERLAB_TOKEN"),
        ({"PEERLAB_GATEWAY_URL": URL, "PEERLAB_TOKEN": "  "}, "PEERLAB_TOKEN"),
    ],
)
def test_missing_connection_settings_name_the_variable(env: dict[str, str | None], needle: str) -> None:
    rec = Recorder(sequence(error(500, "must not be called")))
    for args in (["asn"], ["lease", "list", "--json"]):
        result = run(rec.transport, *args, env=env, flags=False)
        assert result.exit_code == ExitCode.USAGE
        assert needle in result.stderr
    assert rec.calls == 0


def test_bad_gateway_url_is_exit_2() -> None:
    rec = Recorder(sequence(error(500, "must not be called")))
    result = run(
        rec.transport, "asn", env={"PEERLAB_GATEWAY_URL": "gateway.test", "PEERLAB_TOKEN": "t"}, flags=False
    )
    assert result.exit_code == ExitCode.USAGE
    assert "http://HOST:PORT" in result.stderr


def test_commands_are_registered_under_the_reserved_names() -> None:
    ctx = click.Context(main)
    assert isinstance(main.get_command(ctx, "asn"), click.Command)
    lease = main.get_command(ctx, "lease")
    assert isinstance(lease, click.Group)
    assert set(lease.list_commands(ctx)) == {"request", "list", "release", "renew"}


# --- formatting -----------------------------------------------------------------------------------------


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=1, hours=2, minutes=5), "1d 02h"),
        (timedelta(hours=2, minutes=5), "2h 05m"),
        (timedelta(hours=2, minutes=4, seconds=1), "2h 05m"),
        (timedelta(hours=1, minutes=59, seconds=59), "2h 00m"),
        (timedelta(minutes=14), "14m"),
        (timedelta(seconds=61), "2m"),
        (timedelta(seconds=30), "<1m"),
        (timedelta(0), "expired"),
        (timedelta(minutes=-5), "expired"),
    ],
)
def test_format_remaining(delta: timedelta, text: str) -> None:
    assert format_remaining(NOW + delta, NOW) == text


def test_lease_table_shows_dash_for_ended_leases_and_release_time() -> None:
    rows = [
        LeaseRecord(
            prefix="2001:db8:1000::/48", start_time=NOW, end_time=NOW + timedelta(hours=2), state="active"
        ),
        LeaseRecord(
            prefix="2001:db8:1001::/48",
            start_time=NOW - timedelta(hours=3),
            end_time=NOW + timedelta(hours=1),
            released_at=NOW - timedelta(hours=1),
            state="released",
        ),
    ]
    lines = lease_table(rows, NOW).splitlines()
    assert lines[1].split() == [
        "2001:db8:1000::/48",
        "active",
        "2026-11-21",
        "12:00",
        "UTC",
        "2026-11-21",
        "14:00",
        "UTC",
        "2h",
        "00m",
    ]
    assert lines[2].split()[-4:] == ["2026-11-21", "11:00", "UTC", "-"]
