"""Rendering is a pure, deterministic function, and BIRD accepts everything it renders."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from lab.bird import BirdConfigError, validate_config
from lab.rsagent.render import build_plan, protocol_name, render_config
from lab.rsagent.settings import OverlayNetwork, Upstream
from peerlab_tui.core.models import Mapping, TunnelPeer
from tests.rsagent.conftest import make_settings


def users(n: int, *, offset: int = 0) -> tuple[list[Mapping], list[TunnelPeer]]:
    """``n`` users with one /56 lease each and a tunnel address on fd00:100::/64."""
    maps, tuns = [], []
    for i in range(offset, offset + n):
        h = f"{i:08x}" * 2
        maps.append(Mapping(user_hash=h, user_id=f"user{i}", asn=4200000000 + i,
                            prefixes=[f"2001:db8:{0x100 + i // 256:x}:{(i % 256) << 8:x}::/56"]))
        tuns.append(TunnelPeer(user_hash=h, public_key=f"key{i}", addresses=[f"fd00:100::{i + 0x100:x}/64"]))
    return maps, tuns


def test_same_input_gives_byte_identical_output() -> None:
    """Rendering twice gives the same bytes; nothing time-dependent is in the text."""
    settings = make_settings()
    maps, tuns = users(20)
    first = render_config(settings, maps, tuns)
    assert render_config(settings, maps, tuns) == first
    assert not re.search(r"\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d", first)


def test_input_order_does_not_change_output() -> None:
    """Shuffled mappings, shuffled prefixes and shuffled tunnels render the same configuration."""
    settings = make_settings()
    maps, tuns = users(30)
    maps[3] = maps[3].model_copy(update={"prefixes": ["2001:db8:1ff::/48", "2001:db8:1fe::/48"]})
    expected = render_config(settings, maps, tuns)
    rng = random.Random(7)
    for _ in range(5):
        m2 = [m.model_copy(update={"prefixes": rng.sample(m.prefixes, len(m.prefixes))}) for m in maps]
        rng.shuffle(m2)
        t2 = list(tuns)
        rng.shuffle(t2)
        assert render_config(settings, m2, t2) == expected


def test_a_lease_change_changes_output() -> None:
    """The configuration follows the leases (so the agent sees a change and applies it)."""
    settings = make_settings()
    maps, tuns = users(3)
    before = render_config(settings, maps, tuns)
    maps[1] = maps[1].model_copy(update={"prefixes": []})
    after = render_config(settings, maps, tuns)
    assert before != after
    assert maps[2].prefixes[0] in after and "2001:db8:100:100::/56" not in after


def test_sessions_need_a_mapping_and_an_address_on_our_network() -> None:
    """A user gets a session only with an ASN (mapping) and a tunnel address inside our overlay network."""
    settings = make_settings()
    maps = [Mapping(user_hash="a", user_id="alice", asn=65001, prefixes=["2001:db8:100::/48"]),
            Mapping(user_hash="b", user_id="bob", asn=65002, prefixes=["2001:db8:101::/48"]),
            Mapping(user_hash="c", user_id="carol", asn=65003, prefixes=[])]
    ka, kb, kd = ("A" * 42 + "A=", "B" * 42 + "A=", "D" * 42 + "A=")
    tuns = [TunnelPeer(user_hash="a", public_key=ka, addresses=["fd00:100::101/64"]),
            TunnelPeer(user_hash="b", public_key=kb, addresses=["fd00:999::101/64"]),  # other network
            TunnelPeer(user_hash="d", public_key=kd, addresses=["fd00:100::104/64"])]  # no ASN yet
    plan = build_plan(settings, maps, tuns)
    assert [(s.user_id, str(s.neighbor), s.asn) for s in plan.sessions] == [("alice", "fd00:100::101", 65001)]
    assert plan.sessions[0].protocol == protocol_name("a", 65001)
    # WireGuard: overlay address + leased prefixes; a tunnel without ASN still gets its overlay address.
    assert dict(plan.wireguard_peers) == {ka: ("fd00:100::101/128", "2001:db8:100::/48"),
                                          kd: ("fd00:100::104/128",)}
    # ROAs come from every active lease, session or not.
    assert sorted((str(r.prefix), r.max_length, r.asn) for r in plan.policy.roas) == [
        ("2001:db8:100::/48", 48, 65001), ("2001:db8:101::/48", 48, 65002)]


def test_roa_max_length_follows_more_specific_setting() -> None:
    """With max_more_specific_length the ROA (and the policy) allow more-specifics down to that length."""
    maps = [Mapping(user_hash="a", user_id="alice", asn=65001, prefixes=["2001:db8:100::/48"])]
    plan = build_plan(make_settings(max_more_specific_length=56), maps, [])
    assert [(str(r.prefix), r.max_length) for r in plan.policy.roas] == [("2001:db8:100::/48", 56)]
    text = render_config(make_settings(max_more_specific_length=56), maps, [])
    assert "route 2001:db8:100::/48 max 56 as 65001;" in text


def test_unusable_asns_get_no_session() -> None:
    """An ASN BIRD cannot use (> 32 bit) or the route server's own (iBGP) is skipped, not fatal for all."""
    maps = [Mapping(user_hash="a", user_id="alice", asn=65001, prefixes=["2001:db8:100::/48"]),
            Mapping(user_hash="b", user_id="bob", asn=2**32 + 5, prefixes=["2001:db8:101::/48"]),
            Mapping(user_hash="c", user_id="carol", asn=64500, prefixes=["2001:db8:102::/48"])]
    tuns = [TunnelPeer(user_hash=h, public_key=f"k{h}", addresses=[f"fd00:100::10{i}/64"])
            for i, h in enumerate("abc")]
    plan = build_plan(make_settings(), maps, tuns)
    assert [s.user_id for s in plan.sessions] == ["alice"]
    assert [r.asn for r in plan.policy.roas] == [65001]


def test_invalid_gateway_prefixes_are_skipped() -> None:
    """IPv4 or malformed prefixes from the gateway never reach BIRD."""
    maps = [Mapping(user_hash="a", user_id="alice", asn=65001,
                    prefixes=["2001:db8:100::/48", "10.0.0.0/8", "2001:db8:100::1/48", "junk"])]
    plan = build_plan(make_settings(), maps, [])
    assert [str(r.prefix) for r in plan.policy.roas] == ["2001:db8:100::/48"]


@pytest.mark.parametrize("n_users", [0, 1, 300])
def test_bird_accepts_rendered_config(tmp_path: Path, bird_bin: str, n_users: int) -> None:
    """``bird -p`` accepts the configuration for 0, 1 and many users."""
    maps, tuns = users(n_users)
    conf = tmp_path / "bird.conf"
    conf.write_text(render_config(make_settings(), maps, tuns))
    validate_config(conf, bird_binary=bird_bin)


@pytest.mark.parametrize("overrides", [
    {"upstreams": [Upstream(name="transit", address="fd00:100::ffff", asn=64496),
                   Upstream(name="ix-b", address="fd00:200::2", asn=64497, source_address="fd00:200::1")],
     "overlay": [OverlayNetwork(network="fd00:100::/64", address="fd00:100::1"),
                 OverlayNetwork(network="fd00:200::/64", address="fd00:200::1")]},
    {"platform_prefixes": [], "pools": []},
    {"max_more_specific_length": 64, "kernel_export": True, "passive_user_sessions": False},
    {"max_communities": 0, "max_large_communities": 0, "max_as_path_length": 1, "max_prefix": 1},
    {"upstreams": [Upstream(name="transit", address="fd00:100::ffff", asn=64496, password="s3cret-Pa55word",
                            ttl_security=True)],
     "wireguard_interface": "plab-rs1"},
])
def test_bird_accepts_every_settings_variant(tmp_path: Path, bird_bin: str,
                                            overrides: dict[str, object]) -> None:
    """Upstreams, several overlay networks, no pools/platform space, more-specifics: all valid for BIRD."""
    maps, tuns = users(5)
    conf = tmp_path / "bird.conf"
    conf.write_text(render_config(make_settings(**overrides), maps, tuns))
    validate_config(conf, bird_binary=bird_bin)


def test_validation_reports_birds_message(tmp_path: Path, bird_bin: str) -> None:
    """A configuration BIRD refuses raises BirdConfigError with BIRD's own explanation."""
    conf = tmp_path / "bad.conf"
    conf.write_text("router id 1.2.3.4;\nprotocol bgp x { local as 70000000000; }\n")
    with pytest.raises(BirdConfigError, match=r"bad.conf"):
        validate_config(conf, bird_binary=bird_bin)


def test_one_wireguard_key_is_one_peer() -> None:
    """Keys are canonicalised; a key registered by two users (another spelling included) gives no peer to
    either, instead of two entries fighting over one WireGuard peer; other users are unaffected."""
    from peerlab_tui.core.tunnel import generate_private_key, public_key

    settings = make_settings()
    maps, _ = users(3)
    shared, own = public_key(generate_private_key()), public_key(generate_private_key())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    alias = shared[:-2] + alphabet[alphabet.index(shared[-2]) | 1] + "="
    assert alias != shared
    tuns = [TunnelPeer(user_hash=maps[0].user_hash, public_key=shared, addresses=["fd00:100::100/64"]),
            TunnelPeer(user_hash=maps[1].user_hash, public_key=alias, addresses=["fd00:100::101/64"]),
            TunnelPeer(user_hash=maps[2].user_hash, public_key=own, addresses=["fd00:100::102/64"])]
    plan = build_plan(settings, maps, tuns)
    assert [key for key, _ in plan.wireguard_peers] == [own]
    assert [s.user_hash for s in plan.sessions] == [maps[2].user_hash]
    # Alone, the other spelling is canonicalised (WireGuard reports the canonical text).
    plan = build_plan(settings, maps[1:2], tuns[1:2])
    assert [key for key, _ in plan.wireguard_peers] == [shared]


def test_upstream_password_gtsm_and_user_sessions_bound_to_the_tunnel() -> None:
    """The upstream session carries its TCP MD5 password and GTSM; user sessions name the WireGuard
    interface; a password BIRD could misparse is refused by the settings."""
    settings = make_settings(upstreams=[Upstream(name="transit", address="fd00:100::ffff", asn=64496,
                                                 password="s3cret-Pa55word", ttl_security=True)],
                             wireguard_interface="plab-rs1")
    maps, tuns = users(2)
    text = render_config(settings, maps, tuns)
    upstream = text[text.index("protocol bgp t_transit"):]
    assert 'password "s3cret-Pa55word";' in upstream and "ttl security on;" in upstream
    template = text[text.index("template bgp rs_user"):text.index("template bgp rs_user") + 300]
    assert 'interface "plab-rs1";' in template
    assert "password" not in render_config(make_settings(), maps, tuns)
    with pytest.raises(ValueError):
        Upstream(name="t", address="fd00::1", asn=1, password='bad"; import all; #')
    with pytest.raises(ValueError):
        make_settings(wireguard_interface='x"; y')
