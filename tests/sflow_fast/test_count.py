"""The vectorised counter equals the per-record ``count_by_type`` and the counts published in SOURCES.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerlab_tui.core.sflow import count_by_type, decode_datagram
from peerlab_tui.core.sflow.count import count_file
from peerlab_tui.core.sflow.sources import read_file
from tests.sflow_fast.helpers import capture_names, sources_counts


@pytest.mark.parametrize("name", capture_names())
def test_count_equals_reference(shared_dir: Path, name: str) -> None:
    """count_file == count_by_type(decode_datagram(...)) on every shared capture."""
    path = shared_dir / "data" / "sflow" / name
    b = read_file(path).batch
    ref = count_by_type(decode_datagram(b.datagram(i), decode_headers=False) for i in range(len(b)))
    assert count_file(path) == ref


def test_count_equals_sources_md(shared_dir: Path) -> None:
    """Every row of SOURCES.md's coverage table (independent XDR walk, sflowtool, tshark) is reproduced."""
    table = sources_counts(shared_dir)
    assert len(table) >= 24
    base = shared_dir / "data" / "sflow"
    for name, want in table.items():
        got = count_file(base / name)
        assert got["datagrams"] == want["datagrams"], name
        for key in ("samples", "flow_records", "counter_records", "discard_records"):
            assert got[key] == want[key], (name, key)
    # The NetFlow packets sent to 6343 are errors, not datagrams.
    assert count_file(base / "tcpdump__sflow_multiple_counter_30_pdus.pcap")["errors"] == 5


def test_raw_bin_counts_like_its_wrapped_pcap(shared_dir: Path) -> None:
    """A raw datagram file and its pcap-wrapped copy count the same."""
    base = shared_dir / "data" / "sflow"
    for raw in base.glob("*.bin"):
        wrapped = base / "derived" / (raw.stem + ".wrapped.pcap")
        assert count_file(raw) == count_file(wrapped), raw.name
