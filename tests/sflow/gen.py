"""Values for every structure, derived from the field tables (used by round trips, fuzzing and fixtures)."""

from __future__ import annotations

import random

from peerlab_tui.core.sflow import (
    STRUCTURES,
    Datagram,
    Interface,
    Record,
    Sample,
    counter_sample,
    datagram,
    discard_sample,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.model import SAMPLE_HEADER_ATTRS
from peerlab_tui.core.sflow.structures import Key, Structure

RECORD_KEYS = sorted(k for k in STRUCTURES if k[0] != "sample")
SAMPLE_KEYS = sorted(k for k in STRUCTURES if k[0] == "sample")
ALL_KEYS = sorted(STRUCTURES)


def random_record(key: Key, rnd: random.Random) -> Record:
    """A record of ``key`` whose fields come from the table's ``random_value``."""
    structure = STRUCTURES[key]
    fields = structure.random_value(rnd)
    if key == ("flow", 0, 1016):  # 802.11 aggregation: PDUs holding real flow records
        fields["pdus"] = [
            {"flow_records": [random_record(("flow", 0, 1001), rnd), random_record(("flow", 0, 1036), rnd)]},
            {"flow_records": []},
        ]
    return Record(key[0], key[1], key[2], structure.name, fields=fields)


def _sample_from_values(structure: Structure, values: dict[str, object]) -> Sample:
    sample = Sample(structure.enterprise, structure.format, structure.name)
    for name, value in values.items():
        if name in SAMPLE_HEADER_ATTRS:
            setattr(sample, name, value)
        elif name == "source_id":
            sample.source_id_type, sample.source_id_index = value  # type: ignore[misc]
        elif name == "reason":
            sample.reason = value  # type: ignore[assignment]
            from peerlab_tui.core.sflow import DROP_REASONS

            sample.reason_name = DROP_REASONS.get(value)  # type: ignore[call-overload]
        elif name in ("flow_records", "counters", "discard_records", "sample"):
            continue
        else:
            sample.fields[name] = value
    return sample


def random_sample(key: Key, rnd: random.Random) -> Sample:
    """A sample of ``key`` (records for the sample types that carry them, an inner sample for 1991:1)."""
    structure = STRUCTURES[key]
    sample = _sample_from_values(structure, structure.random_value(rnd))
    if key[1:] in ((0, 1), (0, 3), (0, 5)):
        sample.records = [random_record(("flow", 0, 1), rnd), random_record(("flow", 0, 1001), rnd)]
    elif key[1:] in ((0, 2), (0, 4)):
        sample.records = [random_record(("counter", 0, 1), rnd), random_record(("counter", 0, 2), rnd)]
    if key[1:] in ((0, 3),):
        sample.input, sample.output = Interface(0, rnd.getrandbits(32)), Interface(1, 258)
    if key == ("sample", 1991, 1):
        sample.inner = random_sample(("sample", 0, 1), rnd)
    return sample


def sample_for_record(record: Record, rnd: random.Random) -> Sample:
    """A sample that can carry ``record`` (flow sample, counter sample, or discard for drop structures)."""
    if record.kind == "counter":
        return counter_sample([record], sequence_number=rnd.getrandbits(32), expanded=rnd.random() < 0.5)
    if record.enterprise == 0 and 1036 <= record.format <= 1042 and rnd.random() < 0.5:
        return discard_sample([record], reason=rnd.choice([1, 258, 300, 9999]))
    return flow_sample([record], sampling_rate=rnd.randrange(1, 1 << 20), expanded=rnd.random() < 0.5)


def rich_datagram(seed: int = 1) -> Datagram:
    """One datagram with a record of every flow/counter tag and a sample of every sample type."""
    rnd = random.Random(seed)
    samples: list[Sample] = [sample_for_record(random_record(k, rnd), rnd) for k in RECORD_KEYS]
    samples += [random_sample(k, rnd) for k in SAMPLE_KEYS]
    return datagram(samples, agent_address="2001:db8::1", sequence_number=seed, uptime_ms=123456)


def ethernet_tcp_header() -> Record:
    """A sampled header: Ethernet / 802.1Q 10 / IPv4 / TCP SYN (built with dpkt, not our code)."""
    import dpkt

    tcp = dpkt.tcp.TCP(sport=51000, dport=179, flags=dpkt.tcp.TH_SYN, seq=1)
    ip = dpkt.ip.IP(src=bytes([192, 0, 2, 1]), dst=bytes([192, 0, 2, 2]), p=6, ttl=63, tos=0x10, data=tcp)
    ip.len = len(bytes(ip))
    eth = dpkt.ethernet.Ethernet(
        src=bytes.fromhex("020000000001"),
        dst=bytes.fromhex("020000000002"),
        vlan_tags=[dpkt.ethernet.VLANtag8021Q(id=10, pri=3)],
        type=dpkt.ethernet.ETH_TYPE_IP,
        data=ip,
    )
    return sampled_header(bytes(eth), frame_length=1518)
