"""``peerlab-tui sflow``: output shapes and exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from peerlab_tui.cli import main
from peerlab_tui.core.sflow import (
    count_by_type,
    datagram,
    decode_datagram,
    encode_datagram,
    flow_sample,
    sampled_header,
)
from peerlab_tui.core.sflow.count import count_file
from peerlab_tui.core.sflow.sources import read_file
from tests.sflow_fast.helpers import FIXTURES

PMACCT = FIXTURES / "pmacct_sfprobe.pcap"
BIN = Path(sys.executable).parent / "peerlab-tui"


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["sflow", *args])
    return r.exit_code, r.stdout, r.stderr


def test_decode_json_one_object_per_sample() -> None:
    """--json prints one JSON object per sample, records included, in datagram order."""
    code, out, _ = _run("decode", str(PMACCT), "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    b = read_file(PMACCT).batch
    ref = [s for i in range(len(b)) for s in decode_datagram(b.datagram(i)).samples]
    assert len(lines) == len(ref) > 0
    assert [o["tag"] for o in lines] == [s.tag for s in ref]
    assert all(o["records"] for o in lines)
    assert lines[0]["agent_address"] == "192.0.2.1"


def test_decode_human_one_line_per_sample() -> None:
    """Without --json: a compact line per sample."""
    code, out, _ = _run("decode", str(PMACCT))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == sum(1 for _ in json_lines(PMACCT))
    assert all(line.startswith("#") and "flow_sample" in line for line in lines)


def json_lines(path: Path) -> list[str]:
    """Samples of a capture, per the --json output."""
    return _run("decode", str(path), "--json")[1].splitlines()


def test_count_json_equals_count_file_and_reference(tmp_path: Path) -> None:
    """--count --json prints one object, equal to count_file and to the per-record count."""
    code, out, _ = _run("decode", str(PMACCT), "--count", "--json")
    assert code == 0
    got = json.loads(out)
    b = read_file(PMACCT).batch
    assert got == count_file(PMACCT) == count_by_type(decode_datagram(b.datagram(i)) for i in range(len(b)))
    assert set(got) == {
        "datagrams",
        "errors",
        "samples",
        "flow_records",
        "counter_records",
        "discard_records",
    }
    code, out, _ = _run("decode", str(PMACCT), "--count")
    assert code == 0 and out.startswith(f"datagrams {got['datagrams']}")


@pytest.mark.parametrize("content", [None, b"definitely not a capture\n"])
def test_bad_input_exit_2(tmp_path: Path, content: bytes | None) -> None:
    """Missing file or not a capture: a clear error and exit code 2 (JSON error object with --json)."""
    path = tmp_path / "input"
    if content is not None:
        path.write_bytes(content)
    for args in (["decode", str(path)], ["decode", str(path), "--count", "--json"], ["top", str(path)]):
        code, out, err = _run(*args)
        assert code == 2, args
        assert "error:" in err
        if "--json" in args:
            assert json.loads(out)["error"] == "CaptureError"


def test_top_needs_exactly_one_source() -> None:
    """top wants a FILE or --port, not both and not neither."""
    assert _run("top")[0] == 2
    assert _run("top", str(PMACCT), "--port", "0")[0] == 2


def test_top_file_json() -> None:
    """top FILE --json: one snapshot over the capture's span, with the prefix split and top talkers."""
    code, out, _ = _run("top", str(PMACCT), "--prefix", "192.0.2.2/32", "--json")
    assert code == 0
    snap = json.loads(out)
    (w,) = snap["windows"].values()
    assert w["samples"] > 0 and w["bps"] > 0
    assert w["prefixes"][0]["prefix"] == "192.0.2.2/32"
    assert w["prefixes"][0]["in"]["packets"] > 0 and w["prefixes"][0]["out"]["packets"] > 0
    assert {"192.0.2.1", "192.0.2.2"} <= {e["address"] for e in w["top_src"]}
    code, out, _ = _run("top", str(PMACCT))
    assert code == 0 and "top sources:" in out


def _dgram() -> bytes:
    return encode_datagram(datagram([flow_sample([sampled_header(bytes(60))], sampling_rate=10)]))


def test_listen_json_duration_and_ctrl_c() -> None:
    """listen --json prints a listening line, interval lines, a total; Ctrl-C exits cleanly (0)."""
    proc = subprocess.Popen(
        [str(BIN), "sflow", "listen", "--host", "127.0.0.1", "--port", "0", "--json", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "listening" and first["port"] > 0 and first["rcvbuf_granted"] > 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(20):
                s.sendto(_dgram(), ("127.0.0.1", first["port"]))
            s.sendto(b"not sflow", ("127.0.0.1", first["port"]))
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 20 and time.monotonic() < deadline:
            rec = json.loads(proc.stdout.readline())
            assert rec["event"] == "interval" and {"kernel_drops", "queue_drops"} <= set(rec)
            seen += rec["flow_samples"]
        assert seen == 20
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    total = json.loads(out.splitlines()[-1])
    assert total["event"] == "total" and total["datagrams"] == 20 and total["errors"] == 1


def test_listen_duration_exits_by_itself() -> None:
    """--duration S stops the listener after S seconds with exit code 0."""
    code, out, _ = _run("listen", "--host", "127.0.0.1", "--port", "0", "--duration", "0.3", "--json")
    assert code == 0
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events[0] == "listening" and events[-1] == "total"
