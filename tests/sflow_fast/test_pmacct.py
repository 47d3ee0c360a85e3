"""A real sFlow agent, live: pmacctd (sfprobe) in a namespace -> our UDP listener -> decoded flow samples."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from peerlab_tui.core.sflow._fast_reference import addr16
from peerlab_tui.core.sflow.aggregate import format_address
from peerlab_tui.core.sflow.fast import decode_batch
from tests.sflow_fast.helpers import FIXTURES, assert_same_columns, reference
from tests.sflow_fast.pmacct_lab import A4, A6, B4, B6, PmacctLab, collect
from tests.support.netns import NetnsFactory
from tests.support.requirements import require_binary


async def test_pmacctd_to_listener_live(netns_factory: NetnsFactory, tmp_path: Path) -> None:
    """Flow samples from pmacctd carry the test's own namespace addresses (ICMP, ICMPv6, UDP)."""
    binaries = require_binary("pmacctd")
    ns_a, ns_b = netns_factory.create("pa"), netns_factory.create("pb")
    lab = PmacctLab(ns_a, ns_b, netns_factory.unique("pm"), tmp_path, pmacctd=binaries["pmacctd"])
    lab.setup()
    datagrams = await collect(lab, want_flows=10, timeout=60)
    assert datagrams, f"no sFlow from pmacctd; log: {lab.log.read_text() if lab.log else ''}"
    flows, _ = decode_batch(datagrams)
    ref_f, _ = reference(datagrams)
    assert_same_columns(flows, ref_f, "pmacct live")
    assert {format_address(bytes(a)) for a in flows.agent} == {A4}
    pairs = {
        (format_address(bytes(s)), format_address(bytes(d)), int(p))
        for s, d, p, v in zip(flows.src_ip, flows.dst_ip, flows.ip_proto, flows.ip_version, strict=True)
        if v != -1
    }
    assert (A4, B4, 1) in pairs and (B4, A4, 1) in pairs  # ping and reply
    assert (A4, B4, 17) in pairs  # our UDP datagrams
    assert (str(ipaddress.ip_address(A6)), str(ipaddress.ip_address(B6)), 58) in pairs
    assert set(flows.sampling_rate.tolist()) == {1}
    assert addr16(A4)[0] == bytes(flows.agent[0])


def test_committed_fixture_is_real_pmacct_output() -> None:
    """The committed capture (make_pmacct_fixture.py) decodes to flows between the namespace addresses."""
    from peerlab_tui.core.sflow.sources import read_file

    b = read_file(FIXTURES / "pmacct_sfprobe.pcap").batch
    datagrams = [b.datagram(i) for i in range(len(b))]
    flows, _ = decode_batch(datagrams)
    assert len(flows) > 5
    assert_same_columns(flows, reference(datagrams)[0], "pmacct fixture")
    srcs = {format_address(bytes(s)) for s, v in zip(flows.src_ip, flows.ip_version, strict=True) if v != -1}
    assert {A4, B4} <= srcs
