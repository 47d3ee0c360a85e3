"""Helpers of the sFlow fast-path tests: shared captures, the reference columns, column comparison."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from peerlab_tui.core.sflow import decode_datagram
from peerlab_tui.core.sflow._fast_reference import rows_from_datagram
from peerlab_tui.core.sflow.fast import CounterBatch, FlowBatch

SHARED_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_root() -> Path:
    """Where ../shared is (it may be absent: tests then skip through the ``shared_dir`` fixture)."""
    return Path(os.environ.get("PEERLAB_SHARED", SHARED_DEFAULT))


def capture_names() -> list[str]:
    """Every capture of the shared sFlow data set, relative to data/sflow (empty when absent)."""
    base = shared_root() / "data" / "sflow"
    if not base.is_dir():
        return []
    names = [p.relative_to(base).as_posix() for p in base.rglob("*") if p.suffix in (".pcap", ".bin")]
    return sorted(names)


def reference(datagrams: list[bytes]) -> tuple[FlowBatch, CounterBatch]:
    """The columns of every datagram built from the per-record decoder."""
    parts = [rows_from_datagram(decode_datagram(d), i) for i, d in enumerate(datagrams)]
    return FlowBatch.concat([p[0] for p in parts]), CounterBatch.concat([p[1] for p in parts])


def assert_same_columns(mine: Any, ref: Any, what: str = "") -> None:
    """Every column equal (values, shape), with the first differing row in the message."""
    assert len(mine) == len(ref), f"{what}: {len(mine)} rows, reference has {len(ref)}"
    assert mine.names() == ref.names()
    for name in mine.names():
        a = np.asarray(mine.columns[name])
        b = np.asarray(ref.columns[name])
        assert a.shape == b.shape, f"{what}: column {name} shape {a.shape} != {b.shape}"
        diff = (a != b).reshape(len(a), -1).any(axis=1) if len(a) else np.zeros(0, bool)
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            raise AssertionError(f"{what}: column {name} row {i}: fast {a[i]!r} != reference {b[i]!r}")


def _table(cell: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in re.finditer(r"(\d+:\d+)=(\d+)", cell):
        out[m.group(1)] = int(m.group(2))
    return out


def sources_counts(shared: Path) -> dict[str, dict[str, Any]]:
    """The coverage table of data/sflow/SOURCES.md: file -> datagrams, samples and records per kind."""
    text = (shared / "data" / "sflow" / "SOURCES.md").read_text()
    section = text.split("## Coverage per file", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, Any]] = {}
    kinds = {"flow": "flow_records", "counter": "counter_records", "discard": "discard_records"}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| file"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, dgrams, samples, records = cells[0], cells[2], cells[3], cells[4]
        m = re.match(r"(\d+)", dgrams)
        if m is None:
            continue
        row: dict[str, Any] = {
            "datagrams": int(m.group(1)),
            "samples": _table(samples),
            "flow_records": {},
            "counter_records": {},
            "discard_records": {},
        }
        for part in records.split(";"):
            part = part.strip()
            word = part.split(" ", 1)[0]
            if word in kinds:
                row[kinds[word]] = _table(part)
        rows[name] = row
    return rows
