"""lab.bird: the control-socket client against a real BIRD, and the route parser on BIRD's output."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from lab.bird import BirdConfigError, BirdControl, BirdError, BirdProcess, ReplyLine, parse_routes
from tests.support.netns import NetnsFactory

MINIMAL = """log stderr all;
router id 10.0.0.1;
timeformat protocol iso long ms;
protocol device dev1 {}
protocol static st1 { ipv6; route 2001:db8:1::/48 unreachable; route 2001:db8:2::/48 blackhole; }
"""


def _lines(text: str) -> list[ReplyLine]:
    """Reply lines as BIRD sends them (code 1007 for route lines, 1008/1012 for attributes)."""
    out = []
    for raw in text.splitlines():
        if raw.startswith("\t"):
            out.append(ReplyLine(1012, raw))
        else:
            out.append(ReplyLine(1007, raw))
    return out


def test_parse_routes_with_sets_wrapped_communities_and_second_routes() -> None:
    """AS sets, attributes wrapped over lines, a second route of one prefix, MED and large communities."""
    text = (
        "Table master6:\n"
        "2001:db8:100::/48    unicast [u1 2026-01-01 10:00:00.000] * (100) [AS65002i]\n"
        "\tvia fd00::2 on br0\n"
        "\tType: BGP univ\n"
        "\tBGP.origin: IGP\n"
        "\tBGP.as_path: 65001 {65002 65003}\n"
        "\tBGP.next_hop: fd00::2 fe80::1\n"
        "\tBGP.med: 7\n"
        "\tBGP.community: (1,2) (3,4)\n"
        "\t\t(5,6)\n"
        "\tBGP.large_community: (1, 2, 3) (4, 5, 6)\n"
        "                     unicast [u2 2026-01-01 10:00:01.000] (100) [AS65009i]\n"
        "\tvia fd00::3 on br0\n"
        "\tBGP.as_path: 65009\n"
    )
    routes = parse_routes(_lines(text))
    assert len(routes) == 2
    first, second = routes
    assert (first.prefix, first.protocol, first.best, first.table) == (
        "2001:db8:100::/48", "u1", True, "master6")
    assert first.as_path == [65001, 65002, 65003]
    assert first.as_path_segments == [(False, [65001]), (True, [65002, 65003])]
    assert first.communities == ["1:2", "3:4", "5:6"]
    assert first.large_communities == ["1:2:3", "4:5:6"]
    assert (first.med, first.next_hop, first.interface) == (7, "fd00::2", "br0")
    assert (second.prefix, second.protocol, second.best, second.as_path) == ("2001:db8:100::/48", "u2", False,
                                                                             [65009])


@pytest.fixture
def bird(netns_factory: NetnsFactory, tmp_path: Path, bird_bin: str) -> BirdProcess:
    ns = netns_factory.create("bd")
    conf = tmp_path / "bird.conf"
    conf.write_text(MINIMAL)
    proc = BirdProcess(conf, tmp_path / "bird.ctl", netns=ns, log_path=tmp_path / "bird.log",
                       bird_binary=bird_bin)
    proc.start()
    yield proc
    proc.stop()


def test_control_socket_commands(bird: BirdProcess) -> None:
    """show protocols / show route / configure check / reload over the socket, parsed."""
    with bird.control() as ctl:
        protos = {p.name: p for p in ctl.show_protocols()}
        assert protos["st1"].proto == "Static" and protos["st1"].state == "up"
        assert protos["dev1"].since[:4].isdigit() and " " in protos["dev1"].since  # iso long ms
        routes = {r.prefix: r for r in ctl.show_route(protocol="st1")}
        assert set(routes) == {"2001:db8:1::/48", "2001:db8:2::/48"}
        assert routes["2001:db8:1::/48"].route_type == "unreachable"
        assert ctl.configure(check_only=True) == "Configuration OK"
        assert "reload" in ctl.reload_in("st1")
        with pytest.raises(BirdError, match="syntax error"):
            ctl.command("show nonsense")
        # The connection survives an error reply.
        assert ctl.show_protocols("st1")[0].name == "st1"


def test_configure_refusal_keeps_running_config(bird: BirdProcess) -> None:
    """A broken file is refused with BIRD's message; the daemon keeps its protocols."""
    bird.config.write_text(MINIMAL + "protocol static broken { ipv6; route nonsense; }\n")
    with bird.control() as ctl:
        with pytest.raises(BirdConfigError, match=r"bird.conf:6:"):
            ctl.configure()
        assert {p.name for p in ctl.show_protocols()} == {"dev1", "st1"}
    assert bird.running()


def test_start_fails_clearly_on_bad_config(tmp_path: Path, netns_factory: NetnsFactory,
                                           bird_bin: str) -> None:
    """BIRD exiting at start (bad config) raises BirdError with its message, not a timeout."""
    ns = netns_factory.create("bf")
    conf = tmp_path / "bad.conf"
    conf.write_text("router id 10.0.0.1;\nprotocol nonsense {}\n")
    proc = BirdProcess(conf, tmp_path / "bad.ctl", netns=ns, log_path=tmp_path / "bad.log",
                       bird_binary=bird_bin)
    with pytest.raises(BirdError, match="exited"):
        proc.start(timeout=20)
    assert not proc.running()


def test_unreachable_socket(tmp_path: Path) -> None:
    """No daemon behind the socket: a clear BirdSocketError (exit code UNREACHABLE)."""
    with pytest.raises(BirdError, match="cannot reach BIRD") as info:
        BirdControl(tmp_path / "none.ctl", timeout=2).show_protocols()
    assert info.value.exit_code == 7


def _fake_bird(tmp_path: Path, reply: bytes) -> tuple[Path, socket.socket]:
    """A control socket answering every command with ``reply`` (BIRD's framing), in a thread."""
    path = tmp_path / "fake.ctl"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, conn.makefile("rb") as rf:
            conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
            for _ in rf:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return path, srv


@pytest.mark.parametrize("reply, ok", [
    (b"0002-Reading configuration from /x/bird.conf\n0003 Reconfigured\n", True),
    (b"0002-Reading configuration from /x/bird.conf\n0004 Reconfiguration in progress\n", True),
    (b"0018 Reconfiguration confirmed\n", True),
    (b"0002-Reading configuration from /x/bird.conf\n0006 Reconfiguration ignored, shutting down\n", False),
    (b"0002-Reading configuration from /x/bird.conf\n8002 /x/bird.conf:3:1 syntax error\n", False),
    (b"9001 Something went wrong\n", False),
    (b"0002-Reading configuration from /x/bird.conf\n0000 OK\n", False),  # unknown: not success
])
def test_configure_checks_the_reply_code(tmp_path: Path, reply: bytes, ok: bool) -> None:
    """Only a reconfiguration BIRD reports as done (or under way) is success; a shutdown, an error or an
    unknown reply raises BirdConfigError with BIRD's words."""
    path, srv = _fake_bird(tmp_path, reply)
    try:
        with BirdControl(path, timeout=10) as ctl:
            if ok:
                assert ctl.configure() == reply.decode().splitlines()[-1][5:]
            else:
                with pytest.raises(BirdConfigError) as err:
                    ctl.configure()
                assert reply.decode().splitlines()[-1][5:] in str(err.value)
    finally:
        srv.close()


def test_configure_check_wants_configuration_ok(tmp_path: Path) -> None:
    """``configure check`` succeeds on 0020 only."""
    path, srv = _fake_bird(tmp_path, b"0002-Reading configuration from /x\n0003 Reconfigured\n")
    try:
        with BirdControl(path, timeout=10) as ctl, pytest.raises(BirdConfigError):
            ctl.configure(check_only=True)
    finally:
        srv.close()
