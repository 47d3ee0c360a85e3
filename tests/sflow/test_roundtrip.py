"""Round trips generated from the field tables: for every one of the 128 tags, build a value from the table,
encode it, decode it and get the same value back (deterministic seeds plus hypothesis-chosen randomness)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerlab_tui.core.sflow import STRUCTURES, datagram, decode_datagram, encode_datagram, encode_record
from peerlab_tui.core.sflow.structures import Key, markdown
from tests.sflow.gen import (
    ALL_KEYS,
    RECORD_KEYS,
    SAMPLE_KEYS,
    random_record,
    random_sample,
    sample_for_record,
)


def _roundtrip_key(key: Key, rnd: random.Random) -> None:
    if key[0] == "sample":
        sample = random_sample(key, rnd)
    else:
        record = random_record(key, rnd)
        sample = sample_for_record(record, rnd)
    dgram = datagram([sample], agent_address=rnd.choice(["192.0.2.7", "2001:db8::7", ""]))
    wire = encode_datagram(dgram)
    back = decode_datagram(wire, decode_headers=False)
    assert back.ok and back.issues == [], back.issues
    assert back == dgram
    assert encode_datagram(back) == wire
    if key[0] != "sample":
        got = back.samples[0].records[0]
        assert (got.kind, got.enterprise, got.format, got.name) == (
            key[0],
            key[1],
            key[2],
            STRUCTURES[key].name,
        )
        assert got.raw is None and got.issue is None and got.fields == record.fields


def test_there_are_128_tags() -> None:
    """122 registry tags + counters 0:11, 0:2205 + vendor flows 43874:1-3 + Foundry 1991:1."""
    assert len(ALL_KEYS) == 128
    assert len(SAMPLE_KEYS) == 8
    assert {k for k in ALL_KEYS if k[1] not in (0,)} >= {
        ("flow", 43874, 1),
        ("flow", 43874, 2),
        ("flow", 43874, 3),
        ("sample", 1991, 1),
        ("sample", 4300, 1002),
        ("sample", 4300, 1003),
        ("counter", 5703, 1),
        ("flow", 4413, 1),
    }
    assert ("counter", 0, 11) in STRUCTURES and ("counter", 0, 2205) in STRUCTURES


@pytest.mark.parametrize("key", ALL_KEYS, ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}")
def test_every_tag_round_trips(key: Key) -> None:
    """Five deterministic values per tag, straight from the field table."""
    for seed in range(5):
        _roundtrip_key(key, random.Random(f"{key}-{seed}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(ALL_KEYS), rnd=st.randoms(use_true_random=False))
def test_round_trip_hypothesis(key: Key, rnd: random.Random) -> None:
    """hypothesis picks the tag and drives the table-derived value generator."""
    _roundtrip_key(key, rnd)


def test_unknown_tags_are_kept_raw() -> None:
    """An unregistered record tag is kept as raw bytes with its tag and re-encoded unchanged."""
    from peerlab_tui.core.sflow import Record, counter_sample, flow_sample

    flow = Record("flow", 12345, 77, raw=b"\x01\x02\x03\x04\x05\x06\x07\x08")
    counter = Record("counter", 0, 4000, raw=b"")
    wire = encode_datagram(datagram([flow_sample([flow]), counter_sample([counter])]))
    back = decode_datagram(wire)
    got_flow, got_counter = back.samples[0].records[0], back.samples[1].records[0]
    assert (got_flow.tag, got_flow.raw, got_flow.name) == ("12345:77", flow.raw, "unknown_flow_12345_77")
    assert (got_counter.tag, got_counter.raw) == ("0:4000", b"")
    assert back.issues == [] and encode_datagram(back) == wire


def test_same_number_differs_by_kind() -> None:
    """Tag 0:1 is sampled_header as a flow record and if_counters as a counter record."""
    assert STRUCTURES[("flow", 0, 1)].name == "sampled_header"
    assert STRUCTURES[("counter", 0, 1)].name == "if_counters"
    assert STRUCTURES[("sample", 0, 1)].name == "flow_sample"


def test_record_encoding_is_length_prefixed() -> None:
    """data_format = enterprise << 12 | format, then the body length, then the body."""
    rec = random_record(("flow", 43874, 2), random.Random(0))
    wire = encode_record(rec)
    assert wire[:8] == ((43874 << 12) | 2).to_bytes(4, "big") + (16).to_bytes(4, "big")
    assert wire[8:] == rec.fields["tag"].to_bytes(8, "big") + rec.fields["tag2"].to_bytes(8, "big")


def test_markdown_documents_every_tag() -> None:
    """The generated documentation lists each tag with its fields."""
    text = markdown()
    for key in RECORD_KEYS + SAMPLE_KEYS:
        structure = STRUCTURES[key]
        assert f"## {key[0]} {key[1]}:{key[2]} {structure.name}" in text
    assert "| if_in_ucast_pkts | u32 | ifInUcastPkts |" in text


def test_specification_names_become_readable_snake_case() -> None:
    """Plural acronyms stay one word in the JSON names (ipFragOKs is ip_frag_oks, not ip_frag_o_ks)."""
    from peerlab_tui.core.sflow import STRUCTURES

    host_ip = {f.name for f in STRUCTURES[("counter", 0, 2007)].fields}
    assert {"ip_frag_oks", "ip_reasm_oks"} <= host_ip
    lag = {f.name for f in STRUCTURES[("counter", 0, 7)].fields}
    assert {"dot3ad_agg_port_stats_lacpdus_rx", "dot3ad_agg_port_stats_marker_pdus_tx"} <= lag
