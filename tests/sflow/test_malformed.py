"""Malformed input never raises out of the decoder, never allocates beyond the datagram, and every problem is
reported with its byte offset while everything that can still be decoded is."""

from __future__ import annotations

import random
import re
import struct
import tracemalloc
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerlab_tui.core.sflow import (
    Datagram,
    Record,
    Sample,
    count_by_type,
    counter_record,
    counter_sample,
    datagram,
    decode_datagram,
    encode_datagram,
    flow_record,
    flow_sample,
)
from tests.sflow.gen import (
    ALL_KEYS,
    ethernet_tcp_header,
    random_record,
    random_sample,
    rich_datagram,
    sample_for_record,
)


def _internal_errors(d: Datagram) -> list[str]:
    return [i.message for i in d.issues if i.message.startswith("internal decoder error")]


def optical_lanes_datagram() -> tuple[bytes, int]:
    """A ~100-byte datagram whose sfp record declares 593 million lanes; returns it and the count's offset."""
    sfp = counter_record("sfp", module_id=1, module_num_lanes=4, lanes=[])
    port = counter_record("port_name", name="et1")
    wire = bytearray(encode_datagram(datagram([counter_sample([sfp, port])])))
    # 28 datagram header + 8 sample header + 12 counter sample + 8 record header + 16 sfp fixed fields
    count_at = 28 + 8 + 12 + 8 + 16
    assert struct.unpack_from(">I", wire, count_at)[0] == 0
    struct.pack_into(">I", wire, count_at, 593_000_000)
    return bytes(wire), count_at


def test_optical_lanes_count_is_checked_before_allocating() -> None:
    """593 million lanes x 40 bytes would be 23 GB: the count is refused against the bytes left, the record is
    reported at its offset, the next record of the sample still decodes, and memory stays tiny."""
    wire, count_at = optical_lanes_datagram()
    assert len(wire) < 128
    decode_datagram(wire)  # warm caches (imports, struct formats) before measuring
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        dgram = decode_datagram(wire)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak
    sfp, port = dgram.samples[0].records
    assert sfp.issue is not None and "593000000" in sfp.issue and sfp.raw is not None
    assert any(i.offset == count_at and "593000000" in i.message for i in dgram.issues)
    assert port.issue is None and port.fields == {"name": "et1"}


def test_truncated_record_body_is_reported_and_skipped() -> None:
    """An if_counters record declaring 40 bytes (needs 88) is kept raw, reported; the next one decodes."""
    short = Record("counter", 0, 1, raw=b"\0" * 40)
    eth = counter_record("ethernet_counters", dot3_stats_fcs_errors=7)
    dgram = decode_datagram(encode_datagram(datagram([counter_sample([short, eth])])))
    bad, good = dgram.samples[0].records
    assert bad.name == "if_counters" and bad.issue is not None and bad.raw == b"\0" * 40
    assert [i.offset for i in dgram.issues] == [28 + 8 + 12 + 8]  # where the fields ran out
    assert good.issue is None and good.fields["dot3_stats_fcs_errors"] == 7


def test_longer_record_keeps_the_extra_bytes() -> None:
    """Agents extend structures at the end: known fields decode, the extra bytes are kept and re-encoded."""
    rec = Record("flow", 0, 1001, raw=struct.pack(">5I", 10, 1, 20, 2, 99))
    wire = encode_datagram(datagram([flow_sample([rec])]))
    got = decode_datagram(wire).samples[0].records[0]
    assert got.fields == {"src_vlan": 10, "src_priority": 1, "dst_vlan": 20, "dst_priority": 2}
    assert got.tail == struct.pack(">I", 99) and got.issue is None
    assert encode_datagram(decode_datagram(wire)) == wire


def test_datagram_cut_inside_a_record() -> None:
    """A datagram cut short: the complete samples decode, the cut one is reported and kept as trailing."""
    first = flow_sample([ethernet_tcp_header()])
    second = flow_sample([ethernet_tcp_header(), flow_record("extended_switch", src_vlan=10)])
    wire = encode_datagram(datagram([first, second]))
    cut = wire[:-6]
    dgram = decode_datagram(cut)
    assert (
        dgram.ok
        and len(dgram.samples) == 1
        and dgram.samples[0].records[0].fields["decoded"]["dst_port"] == 179
    )
    second_at = len(encode_datagram(datagram([first])))
    assert any(i.offset == second_at and "overruns" in i.message for i in dgram.issues)
    assert dgram.trailing == cut[second_at:]


def test_record_overrunning_its_sample() -> None:
    """A record length larger than its sample: the record is reported, the sample and datagram survive."""
    wire = bytearray(
        encode_datagram(datagram([flow_sample([flow_record("extended_switch")]), counter_sample([])]))
    )
    rec_at = 28 + 8 + 32
    struct.pack_into(">I", wire, rec_at + 4, 1000)
    dgram = decode_datagram(bytes(wire))
    rec = dgram.samples[0].records[0]
    assert rec.issue is not None and "overruns" in rec.issue
    assert [s.tag for s in dgram.samples] == ["0:1", "0:2"]  # the next sample still decodes
    assert any(i.offset == rec_at for i in dgram.issues)


def test_sample_count_larger_than_present() -> None:
    """The header declares 5 samples but carries 2: both decode and the shortfall is reported."""
    wire = bytearray(encode_datagram(datagram([counter_sample([]), counter_sample([])])))
    struct.pack_into(">I", wire, 24, 5)
    dgram = decode_datagram(bytes(wire))
    assert dgram.ok and len(dgram.samples) == 2 and dgram.num_samples == 5
    assert any("declares 5 samples, only 2" in i.message and i.offset == len(wire) for i in dgram.issues)


def test_record_count_larger_than_present() -> None:
    """A flow sample declaring 1000 records but holding one: the record decodes, the count is reported."""
    wire = bytearray(encode_datagram(datagram([flow_sample([flow_record("extended_switch", dst_vlan=5)])])))
    struct.pack_into(">I", wire, 28 + 8 + 28, 1000)
    dgram = decode_datagram(bytes(wire))
    assert dgram.samples[0].records[0].fields["dst_vlan"] == 5
    assert any("1000" in i.message for i in dgram.issues)


def test_trailing_bytes_are_kept_and_reported() -> None:
    """Bytes after the declared samples are reported at their offset and re-encoded."""
    base = encode_datagram(datagram([counter_sample([])]))
    dgram = decode_datagram(base + b"junk")
    assert dgram.trailing == b"junk" and [i.offset for i in dgram.issues] == [len(base)]
    assert encode_datagram(dgram) == base + b"junk"


def test_not_sflow() -> None:
    """NetFlow v5, other versions, empty and short packets, bad agent address type: ok=False, no exception."""
    netflow = struct.pack(">HHIIIIBBH", 5, 1, 1000, 0, 0, 0, 0, 0, 0) + b"\0" * 48
    for data in (
        netflow,
        b"",
        b"\0\0",
        struct.pack(">I", 4) + b"\0" * 40,
        struct.pack(">II", 5, 1) + b"\1\2",
    ):
        dgram = decode_datagram(data)
        assert not dgram.ok and dgram.issues and not _internal_errors(dgram)
    assert "NetFlow" in decode_datagram(netflow).issues[0].message
    bad_agent = decode_datagram(struct.pack(">II", 5, 9) + b"\0" * 40)
    assert not bad_agent.ok and bad_agent.issues[0].offset == 4


def test_unknown_sample_type_is_skipped_by_length() -> None:
    """An unregistered sample type is kept raw and the samples after it decode."""
    wire = bytearray(
        encode_datagram(datagram([counter_sample([]), counter_sample([counter_record("humidity")])]))
    )
    struct.pack_into(">I", wire, 28, (777 << 12) | 9)
    dgram = decode_datagram(bytes(wire))
    assert dgram.samples[0].tag == "777:9" and dgram.samples[0].raw is not None
    assert dgram.samples[1].records[0].name == "humidity"
    assert encode_datagram(dgram) == bytes(wire)


def test_every_truncation_of_a_rich_datagram() -> None:
    """Cutting a datagram that holds all 128 tags at many points never hits the internal-error guard."""
    wire = encode_datagram(rich_datagram(3))
    for n in list(range(300)) + list(range(300, len(wire), 37)):
        dgram = decode_datagram(wire[:n])
        assert not _internal_errors(dgram), (n, dgram.issues)


@cache
def _seeds() -> list[bytes]:
    rnd = random.Random(5)
    out = []
    for key in ALL_KEYS:
        if key[0] == "sample":
            sample = random_sample(key, rnd)
        else:
            sample = sample_for_record(random_record(key, rnd), rnd)
        out.append(encode_datagram(datagram([sample, flow_sample([ethernet_tcp_header()])])))
    return out


_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 593_000_000]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid datagram from the encoder with a few structure-aware mutations."""
    data = bytearray(draw(st.sampled_from(_seeds())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and len(data) >= 4:  # overwrite an aligned word with an interesting value
            pos = min(pos & ~3, len(data) - 4)
            struct.pack_into(">I", data, pos, draw(st.sampled_from(_INTERESTING)))
        elif op == 1 and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            del data[pos:]
        elif op == 3:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


def _check(data: bytes) -> None:
    dgram = decode_datagram(data)
    assert not _internal_errors(dgram), dgram.issues
    raw_total = sum(len(s.raw or b"") + sum(len(r.raw or b"") for r in s.records) for s in dgram.samples)
    assert raw_total <= len(data)
    structural = [i for i in dgram.issues if i.message != "non-zero XDR padding"]
    if dgram.ok and not structural:
        # A well-formed decode re-encodes to a datagram that decodes to the same value.
        again = decode_datagram(encode_datagram(dgram))
        assert again.samples == dgram.samples


@settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=mutated())
def test_fuzz_mutated_datagrams(data: bytes) -> None:
    """Mutated encoder output: no internal error, no raw bytes beyond the input, clean decodes re-encode."""
    _check(data)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(st.binary(max_size=600), st.binary(max_size=200).map(lambda b: b"\0\0\0\5\0\0\0\1" + b))
)
def test_fuzz_random_bytes(data: bytes) -> None:
    """Random bytes (half of them starting like an sFlow v5 IPv4 datagram)."""
    _check(data)


def test_foundry_wrapper_with_extra_length() -> None:
    """A 1991:1 wrapper whose length counts 8 more bytes than flags + group + inner sample: the inner flow
    sample decodes, the difference is reported, and the next sample is found after the wrapper."""
    inner = flow_sample([flow_record("extended_switch", src_vlan=7)])
    wrapper = Sample(1991, 1, "foundry_acl_sample", fields={"flags": 3, "group_id": 9}, inner=inner)
    wrapper.tail = b"\0" * 8
    wire = encode_datagram(datagram([wrapper, counter_sample([counter_record("humidity", relative=40)])]))
    dgram = decode_datagram(wire)
    got = dgram.samples[0]
    assert got.fields == {"flags": 3, "group_id": 9} and got.inner is not None
    assert got.inner.records[0].fields["src_vlan"] == 7
    assert [i.message for i in dgram.issues] == ["Foundry wrapper is 8 bytes longer than its inner sample"]
    assert dgram.samples[1].records[0].fields == {"relative": 40}
    counts = count_by_type([dgram])
    assert counts["samples"] == {"1991:1": 1, "0:2": 1} and counts["flow_records"] == {"0:1001": 1}


def test_rtmetric_with_unknown_value_type_is_skipped() -> None:
    """An rtmetric whose metric type is unknown cannot be walked: the sample is kept raw, the next decodes."""
    metric = Sample(
        4300, 1002, "rtmetric", fields={"datasource": "x", "metrics": [{"name": "a", "type": 3, "value": 1}]}
    )
    wire = bytearray(encode_datagram(datagram([metric, counter_sample([])])))
    type_at = 28 + 8 + 8 + 4 + 8  # datasource "x" (4+4), metric count, name "a" (4+4)
    assert struct.unpack_from(">I", wire, type_at)[0] == 3
    struct.pack_into(">I", wire, type_at, 42)
    dgram = decode_datagram(bytes(wire))
    assert dgram.samples[0].raw is not None and "unknown type 42" in (dgram.samples[0].issue or "")
    assert dgram.samples[1].tag == "0:2" and any(i.offset == type_at + 4 for i in dgram.issues)


def test_structure_doc_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m peerlab_tui.core.sflow.structures --markdown` prints every tag."""
    from peerlab_tui.core.sflow.structures import main

    assert main(["--markdown"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"\n## (sample|flow|counter) ", out)) == 128
    assert "| sample | 1991:1 | foundry_acl_sample |" in out


def test_structure_doc_module_runs() -> None:
    """The documented command works as a module (no double import of the tables)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "peerlab_tui.core.sflow.structures", "--markdown"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stderr == "" and len(re.findall(r"\n## (sample|flow|counter) ", out.stdout)) == 128
    assert "### as_path_segment" in out.stdout
    assert "| dst_as_path | struct as_path_segment<> (u32 count + elements) | dst_as_path |" in out.stdout


def test_bad_record_nested_two_aggregation_levels_deep_is_reported() -> None:
    """A truncated extended_switch inside 0:1016 inside 0:1016 reaches the datagram's issues."""
    rnd = random.Random(7)
    short_switch = Record("flow", 0, 1001, raw=b"\0" * 4)  # needs 16 bytes
    inner_agg = random_record(("flow", 0, 1016), rnd)
    inner_agg.fields["pdus"] = [{"flow_records": [short_switch]}]
    outer_agg = random_record(("flow", 0, 1016), rnd)
    outer_agg.fields["pdus"] = [{"flow_records": [inner_agg]}]
    dgram = decode_datagram(encode_datagram(datagram([flow_sample([outer_agg])])))
    assert len(dgram.issues) == 1, dgram.issues
    deep = dgram.samples[0].records[0].fields["pdus"][0]["flow_records"][0].fields["pdus"][0]
    bad = deep["flow_records"][0]
    assert bad.name == "extended_switch" and bad.issue is not None
    # Every level is a plain list once decoded (no decoder internals leak out).
    assert type(deep["flow_records"]) is list
    assert type(dgram.samples[0].records[0].fields["pdus"][0]["flow_records"]) is list
