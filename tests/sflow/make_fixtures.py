"""Build the fixtures of tests/sflow/fixtures with our encoder (``python -m tests.sflow.make_fixtures``).

The test suite checks the stored files still equal what this produces, then checks decoded fields.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peerlab_tui.core.sflow import (
    Interface,
    Sample,
    counter_record,
    counter_sample,
    datagram,
    discard_sample,
    encode_datagram,
    flow_record,
    flow_sample,
)
from tests.sflow.gen import ethernet_tcp_header, rich_datagram

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def build() -> dict[str, bytes]:
    """Fixture name -> datagram bytes."""
    flow = flow_sample(
        [
            ethernet_tcp_header(),
            flow_record("extended_switch", src_vlan=10, src_priority=3, dst_vlan=20, dst_priority=0),
            flow_record("extended_router", nexthop="192.0.2.254", src_mask_len=24, dst_mask_len=16),
            flow_record(
                "extended_gateway",
                nexthop="2001:db8::fe",
                **{"as": 64500},
                src_as=64501,
                src_peer_as=64502,
                dst_as_path=[{"type": 2, "value": [64502, 64503]}],
                communities=[(64500 << 16) | 1],
                localpref=150,
            ),
        ],
        sequence_number=42,
        source_id_index=3,
        sampling_rate=512,
        sample_pool=512 * 42,
        drops=1,
        input=3,
        output=Interface(2, 4),
    )
    counters = counter_sample(
        [
            counter_record(
                "if_counters",
                if_index=3,
                if_type=6,
                if_speed=10_000_000_000,
                if_direction=1,
                if_status=3,
                if_in_octets=123456789012,
                if_out_octets=987654321,
            ),
            counter_record("ethernet_counters", dot3_stats_fcs_errors=5),
            counter_record("host_cpu", load_one=0.5, cpu_num=4, uptime=3600),
        ],
        sequence_number=7,
        source_id_index=3,
        expanded=True,
    )
    drop = discard_sample(
        [
            flow_record("extended_function", symbol="ip_rcv_finish"),
            flow_record("extended_hw_trap", group="l3_drops", trap="blackhole_route"),
            flow_record("extended_linux_drop_reason", reason="NO_SOCKET"),
            flow_record("extended_timestamp", nanoseconds=1_763_700_000_123_456_789),
        ],
        reason=258,
        sequence_number=9,
        drops=2,
        input=3,
        output=0,
    )
    rt = Sample(
        4300,
        1002,
        "rtmetric",
        fields={
            "datasource": "lab",
            "metrics": [
                {"name": "peers", "type": 3, "value": 12},
                {"name": "state", "type": 0, "value": "up"},
                {"name": "load", "type": 6, "value": 0.25},
            ],
        },
    )
    return {
        "flow_ipv4_tcp.bin": encode_datagram(
            datagram([flow], agent_address="192.0.2.1", sequence_number=1000)
        ),
        "counters_ipv6_agent.bin": encode_datagram(
            datagram([counters], agent_address="2001:db8::1", sub_agent_id=2)
        ),
        "discard_acl.bin": encode_datagram(datagram([drop], agent_address="192.0.2.9")),
        "sflowrt_metric.bin": encode_datagram(datagram([rt], agent_address="192.0.2.10")),
        "all_128_tags.bin": encode_datagram(rich_datagram(1)),
    }


def main() -> int:
    """Write the fixtures."""
    FIXTURES.mkdir(exist_ok=True)
    for name, data in build().items():
        (FIXTURES / name).write_bytes(data)
        sys.stdout.write(f"{name}: {len(data)} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
