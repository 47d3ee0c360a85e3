"""Expiry, quarantine and renewal, with the gateway's clock moved through ``--clock-file``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from peerlab_tui.core.models import LeaseList, PrefixResponse, UserInfo
from tests.gateway.conftest import GatewayFactory
from tests.gateway.helpers import assert_error, call, enc, user_with_asn
from tests.support.gateway import GatewayHandle


class Clock:
    """Moves a running gateway's time by writing the offset file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        path.write_text("0")

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.path.write_text(str(self.offset))


def _start(make_gateway: GatewayFactory, tmp_path: Path, *args: str) -> tuple[GatewayHandle, Clock]:
    clock = Clock(tmp_path / "clock-offset")
    return make_gateway(["--clock-file", str(clock.path), *args]), clock


def test_expiry_by_time_alone(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    """A lease past its end is no longer active anywhere, counts as expired, and frees the user's slot."""
    gw, clock = _start(make_gateway, tmp_path, "--quarantine-seconds", "600")
    alice = user_with_asn(gw, "alice")
    svc = gw.create_service_token("rs", ["mappings:read"])
    lease = PrefixResponse.model_validate(
        call(gw, "POST", "/api/user/prefix", alice["token"], json={"duration_hours": 2}).json()
    )
    assert call(gw, "GET", "/service/mappings", svc).json()["mappings"][0]["prefixes"] == [lease.prefix]

    clock.advance(2 * 3600 - 60)  # one minute before the end: still active
    assert (
        len(UserInfo.model_validate(call(gw, "GET", "/api/user/info", alice["token"]).json()).active_leases)
        == 1
    )

    clock.advance(120)  # one minute after the end
    info = UserInfo.model_validate(call(gw, "GET", "/api/user/info", alice["token"]).json())
    assert info.active_leases == []
    assert call(gw, "GET", "/service/mappings", svc).json()["mappings"][0]["prefixes"] == []
    hist = LeaseList.model_validate(call(gw, "GET", "/api/user/leases?history=true", alice["token"]).json())
    assert [(x.prefix, x.state, x.released_at) for x in hist.leases] == [(lease.prefix, "expired", None)]
    assert_error(
        call(gw, "DELETE", f"/api/user/prefix/{enc(lease.prefix)}", alice["token"]), 404, "not_found"
    )
    # the limit of one lease is free again
    again = call(gw, "POST", "/api/user/prefix", alice["token"], json={"duration_hours": 1})
    assert again.status_code == 200 and again.json()["prefix"] != lease.prefix


def test_quarantine_after_release_and_expiry(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    """One-prefix pool: a released or expired prefix is refused to everyone until its quarantine ends."""
    gw, clock = _start(
        make_gateway,
        tmp_path,
        "--prefix-pool",
        "2001:db8:42::/48",
        "--lease-length",
        "48",
        "--quarantine-seconds",
        "600",
    )
    a, b = user_with_asn(gw, "a"), user_with_asn(gw, "b")
    prefix = call(gw, "POST", "/api/user/prefix", a["token"], json={"duration_hours": 1}).json()["prefix"]
    assert prefix == "2001:db8:42::/48"
    assert_error(
        call(gw, "POST", "/api/user/prefix", b["token"], json={"duration_hours": 1}), 503, "pool_exhausted"
    )

    assert call(gw, "DELETE", f"/api/user/prefix/{enc(prefix)}", a["token"]).status_code == 204
    clock.advance(599)
    for user in (a, b):  # not even the previous holder gets it back early
        assert_error(
            call(gw, "POST", "/api/user/prefix", user["token"], json={"duration_hours": 1}),
            503,
            "pool_exhausted",
        )
    clock.advance(2)
    got = call(gw, "POST", "/api/user/prefix", b["token"], json={"duration_hours": 1})
    assert got.status_code == 200 and got.json()["prefix"] == prefix

    clock.advance(3600 + 1)  # b's lease expires: quarantine counts from its end
    assert_error(
        call(gw, "POST", "/api/user/prefix", a["token"], json={"duration_hours": 1}), 503, "pool_exhausted"
    )
    clock.advance(600)
    assert call(gw, "POST", "/api/user/prefix", a["token"], json={"duration_hours": 1}).status_code == 200
    metrics = call(gw, "GET", "/metrics").text
    assert "peerlab_gateway_pool_size 1" in metrics and "peerlab_gateway_pool_free 0" in metrics
    assert "peerlab_gateway_active_leases 1" in metrics


def test_renewal_extends_from_the_current_end_within_the_lifetime(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Renew adds N hours to the current end; past --max-lifetime-hours it is 403 lifetime_exceeded."""
    gw, clock = _start(
        make_gateway,
        tmp_path,
        "--prefix-pool",
        "2001:db8:43::/48",
        "--lease-length",
        "48",
        "--max-lifetime-hours",
        "30",
        "--quarantine-seconds",
        "0",
    )
    alice, bob = user_with_asn(gw, "alice"), user_with_asn(gw, "bob")
    tok = alice["token"]
    lease = PrefixResponse.model_validate(
        call(gw, "POST", "/api/user/prefix", tok, json={"duration_hours": 10}).json()
    )
    clock.advance(3600)
    renewed = PrefixResponse.model_validate(
        call(
            gw, "POST", f"/api/user/prefix/{enc(lease.prefix)}/renew", tok, json={"duration_hours": 12}
        ).json()
    )
    assert renewed.prefix == lease.prefix and renewed.start_time == lease.start_time
    assert renewed.end_time == lease.end_time + timedelta(hours=12)  # from the end, not from now
    body = assert_error(
        call(gw, "POST", f"/api/user/prefix/{enc(lease.prefix)}/renew", tok, json={"duration_hours": 9}),
        403,
        "lifetime_exceeded",
        contains="30 hours",
    )
    assert "8" in body.message  # how much is left
    ok = call(gw, "POST", f"/api/user/prefix/{enc(lease.prefix)}/renew", tok, json={"duration_hours": 8})
    assert ok.status_code == 200 and ok.json()["end_time"] == (
        lease.start_time + timedelta(hours=30)
    ).isoformat().replace("+00:00", "Z")

    # the renewal holds the prefix: still held after the original end, free right after the new one
    clock.advance(20 * 3600)
    assert_error(
        call(gw, "POST", "/api/user/prefix", bob["token"], json={"duration_hours": 1}), 503, "pool_exhausted"
    )
    clock.advance(9 * 3600 + 1)
    assert_error(
        call(gw, "POST", f"/api/user/prefix/{enc(lease.prefix)}/renew", tok, json={"duration_hours": 1}),
        404,
        "not_found",
    )
    assert call(gw, "POST", "/api/user/prefix", bob["token"], json={"duration_hours": 1}).status_code == 200
