"""ExaBGP configuration and commands as rendered, and ExaBGP's JSON events as parsed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peerlab_tui.core.bgp import (
    Announcement,
    ExaBgpError,
    NeighborConfig,
    SessionState,
    Speaker,
    SpeakerConfig,
    SpeakerNotRunningError,
)
from peerlab_tui.core.bgp.events import FsmEvent, NotificationEvent, StateEvent, UpdateEvent, parse_event
from peerlab_tui.core.bgp.model import default_router_id
from peerlab_tui.core.bgp.render import RELAY_SCRIPT, announce_command, render_config, withdraw_command
from peerlab_tui.core.bgp.speaker import find_exabgp
from peerlab_tui.core.models import RouteServerPeer, TunnelInfo

RS1 = NeighborConfig(name="rs1", address="fd00::1", asn=64500, local_address="fd00::2")
RS2 = NeighborConfig(name="rs2", address="fd00:1::1", asn=64501, local_address="fd00:1::2")
CONFIG = SpeakerConfig(asn=4200000001, router_id="10.0.0.1", neighbors=[RS1, RS2], hold_time=30)

HEAD = ('{ "exabgp": "5.0.0", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 1, ')
NEIGHBOR = ('"neighbor": { "address": { "local": "fd00::2", "peer": "fd00::1" }, '
            '"asn": { "local": 4200000001, "peer": 64500 }, "router-id": "10.0.0.1" ')


def test_config_is_deterministic_and_accepted_by_exabgp(tmp_path: Path) -> None:
    """Same input, same text (whatever the neighbor order); the real ExaBGP validates it."""
    text = render_config(CONFIG, "/run/x.sock", python="/usr/bin/python3")
    swapped = CONFIG.model_copy(update={"neighbors": [RS2, RS1]})
    assert render_config(swapped, "/run/x.sock", python="/usr/bin/python3") == text
    for needle in ("router-id 10.0.0.1;", "local-as 4200000001;", "peer-as 64501;",
                   "local-address fd00:1::2;", "hold-time 30;", "passive false;", "ipv6 unicast;",
                   "route-refresh;",
                   f"run /usr/bin/python3 -I {RELAY_SCRIPT} /run/x.sock;", "encoder json;"):
        assert needle in text
    assert text.index("neighbor fd00::1 ") < text.index("neighbor fd00:1::1 ")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    ok = subprocess.run([find_exabgp(), "validate", str(conf)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    conf.write_text(text.replace("ipv6 unicast;", "ipv6 unicasts;"))
    bad = subprocess.run([find_exabgp(), "validate", str(conf)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0  # the check above can fail


def test_config_from_the_gateway_tunnel_info() -> None:
    """One neighbor per route server of the TunnelInfo, our overlay address as local address."""
    tunnel = TunnelInfo(addresses=["fd10::5/64"], asn=4200000007, route_servers=[
        RouteServerPeer(name="rs-a", public_key="k", endpoint="[fd::1]:51820", overlay_address="fd10::1",
                        bgp_neighbor="fd10::1", asn=64500, local_address="fd10::5/64"),
        RouteServerPeer(name="rs-b", public_key="k", endpoint="[fd::2]:51820", overlay_address="fd11::1",
                        bgp_neighbor="fd11::1", asn=64500),
    ])
    config = SpeakerConfig.from_tunnel(tunnel)
    assert config.asn == 4200000007 and config.router_id == default_router_id(4200000007)
    assert [(n.name, n.address, n.local_address) for n in config.neighbors] == [
        ("rs-a", "fd10::1", "fd10::5"), ("rs-b", "fd11::1", "fd10::5")]  # one address: shared
    assert default_router_id(65001) != default_router_id(65002) != "0.0.0.0"


def test_announce_and_withdraw_commands() -> None:
    """Explicit AS path (our ASN once plus the prepends), next hop self by default, attributes in order."""
    assert announce_command(RS1, Announcement(prefix="2001:db8::/48"), 65001) == (
        "neighbor fd00::1 announce route 2001:db8::/48 next-hop fd00::2 origin igp as-path [ 65001 ]")
    full = Announcement(prefix="2001:db8::/48", next_hop="fd00::9", prepend=2, med=0,
                        communities=["1:2", "3:4"], large_communities=["5:6:7"])
    assert announce_command(RS1, full, 65001) == (
        "neighbor fd00::1 announce route 2001:db8::/48 next-hop fd00::9 origin igp "
        "as-path [ 65001 65001 65001 ] med 0 community [ 1:2 3:4 ] large-community [ 5:6:7 ]")
    assert withdraw_command(RS2, "2001:db8::/48") == "neighbor fd00:1::1 withdraw route 2001:db8::/48"


def test_parse_fsm_state_and_notification() -> None:
    """FSM states, the coarse up/down state with its reason, and notifications."""
    fsm = parse_event(HEAD + '"type": "fsm", ' + NEIGHBOR + ', "state": "OPENCONFIRM" } }')
    assert fsm == FsmEvent(peer="fd00::1", state=SessionState.OPENCONFIRM)
    down = parse_event(HEAD + '"type": "state", ' + NEIGHBOR
                       + ', "state": "down", "reason": "peer reset" } }')
    assert down == StateEvent(peer="fd00::1", state="down", reason="peer reset")
    note = parse_event(HEAD + '"type": "notification", ' + NEIGHBOR + ', "direction": "receive", '
                       '"notification": { "code": 6, "subcode": 2, "data": "", "message": "bye" } } }')
    assert note == NotificationEvent(peer="fd00::1", direction="receive", code=6, subcode=2, message="bye")
    shutdown = HEAD.replace('"counter": 1, ', "") + '"type": "notification", "notification": "shutdown" }'
    assert parse_event(shutdown) is None
    assert parse_event("not json") is None


def test_parse_update_prefers_the_global_next_hop() -> None:
    """An MP_REACH with global and link-local next hops is listed twice by ExaBGP; we keep the global one."""
    line = (HEAD + '"type": "update", ' + NEIGHBOR + ', "direction": "receive", "message": { "update": { '
            '"attribute": { "origin": "igp", "as-path": { "0": { "element": "as-sequence", '
            '"value": [ 64510, 64511 ] } }, "confederation-path": [], "med": 33, '
            '"community": [ [ 64500, 20 ] ], "large-community": [ [ 64500, 1 , 2 ] ] }, '
            '"announce": { "ipv6 unicast": { "fe80::1": [ { "nlri": "2001:db8:f00::/48" } ], '
            '"fd00::1": [ { "nlri": "2001:db8:f00::/48" }, { "nlri": "2001:db8:f01::/48" } ] } } } } } }')
    event = parse_event(line)
    assert isinstance(event, UpdateEvent)
    assert event.announced == {"2001:db8:f00::/48": "fd00::1", "2001:db8:f01::/48": "fd00::1"}
    assert event.attributes.as_path == [64510, 64511] and event.attributes.med == 33
    assert event.attributes.communities == ["64500:20"]
    assert event.attributes.large_communities == ["64500:1:2"]
    withdraw = parse_event(HEAD + '"type": "update", ' + NEIGHBOR + ', "direction": "receive", "message": '
                           '{ "update": { "withdraw": { "ipv6 unicast": '
                           '[ { "nlri": "2001:db8:f00::/48" } ] } } } } }')
    assert isinstance(withdraw, UpdateEvent) and withdraw.withdrawn == ["2001:db8:f00::/48"]
    eor = parse_event(HEAD + '"type": "update", ' + NEIGHBOR + ', "direction": "receive", "message": '
                      '{ "eor": { "afi" : "ipv6", "safi" : "unicast" } } } }')
    assert eor is None


async def test_a_failing_exabgp_is_reported_with_its_log(tmp_path: Path) -> None:
    """When ExaBGP exits before its API process connects, start() fails with the log's last lines."""
    fake = tmp_path / "fake-exabgp"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = version ]; then echo 'ExaBGP : 5.0.15'; exit 0; fi\n"
                    "echo 'configuration error: neighbor is not valid' >&2\nexit 3\n")
    fake.chmod(0o755)
    speaker = Speaker(CONFIG, tmp_path / "state", exabgp=str(fake), connect_timeout=30)
    with pytest.raises(ExaBgpError) as info:
        await speaker.start()
    assert "code 3" in info.value.message and "neighbor is not valid" in info.value.message
    assert info.value.exit_code == 8
    assert speaker.status().running is False and speaker.pid is None
    with pytest.raises(SpeakerNotRunningError):
        await speaker.withdraw("2001:db8::/48")


@pytest.mark.parametrize("version", ["4.2.21", "5.0.12", "5.1.0"])
async def test_an_unsupported_exabgp_version_is_refused_at_start(tmp_path: Path, version: str) -> None:
    """ExaBGP outside 5.0.13 <= v < 5.1 is refused before it runs, naming the version and the range."""
    fake = tmp_path / "old-exabgp"
    marker = tmp_path / "ran"
    fake.write_text(f"#!/bin/sh\nif [ \"$1\" = version ]; then echo 'ExaBGP : {version}'; exit 0; fi\n"
                    f"touch {marker}\nsleep 30\n")
    fake.chmod(0o755)
    speaker = Speaker(CONFIG, tmp_path / "state", exabgp=str(fake), connect_timeout=30)
    with pytest.raises(ExaBgpError) as info:
        await speaker.start()
    assert f"ExaBGP {version}" in info.value.message and ">= 5.0.13 and < 5.1" in info.value.message
    assert not marker.exists()  # it was never started as a speaker
    assert speaker.status().running is False
