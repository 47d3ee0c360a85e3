"""Fixtures of the sFlow decoder tests: the shared captures and their expected counts (SOURCES.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Expected:
    """One row of the coverage table of ../shared/data/sflow/SOURCES.md."""

    file: str
    datagrams: int
    errors: int
    samples: dict[str, int]
    flow_records: dict[str, int] = field(default_factory=dict)
    counter_records: dict[str, int] = field(default_factory=dict)
    discard_records: dict[str, int] = field(default_factory=dict)
    header_protocols: dict[int, int] = field(default_factory=dict)


def _pairs(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(\d+:\d+)=(\d+)", text)}


def parse_sources(text: str) -> dict[str, Expected]:
    """Rows of the 'Coverage per file' table, keyed by the file's path relative to the data folder."""
    section = text.split("## Coverage per file", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Expected] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not re.search(r"\.(pcap|bin)$", cells[0]):
            continue
        name, _size, dgrams, samples, records, protocols = cells[:6]
        netflow = re.search(r"\+(\d+) NetFlow", dgrams)
        exp = Expected(
            file=name,
            datagrams=int(re.match(r"\d+", dgrams).group(0)),  # type: ignore[union-attr]
            errors=int(netflow.group(1)) if netflow else 0,
            samples=_pairs(samples),
        )
        for part in records.split(";"):
            kind, _, rest = part.strip().partition(" ")
            target = {
                "flow": exp.flow_records,
                "counter": exp.counter_records,
                "discard": exp.discard_records,
            }
            target[kind].update(_pairs(rest))
        exp.header_protocols = {int(k): int(v) for k, v in re.findall(r"(\d+)=(\d+)", protocols)}
        rows[name] = exp
    return rows


@pytest.fixture(scope="session")
def sflow_data(shared_dir: Path) -> Path:
    """../shared/data/sflow."""
    return shared_dir / "data" / "sflow"


@pytest.fixture(scope="session")
def expected_counts(sflow_data: Path) -> dict[str, Expected]:
    """The expected counts per capture, parsed from SOURCES.md."""
    return parse_sources((sflow_data / "SOURCES.md").read_text())
