"""Regenerate ``fixtures/pmacct_sfprobe.pcap``: real pmacctd (sfprobe) datagrams captured in namespaces.

Run as root from the repository root: ``.venv/bin/python -m tests.sflow_fast.make_pmacct_fixture``.
The namespaces, the veth pair and pmacctd are created here and removed at the end (see ``pmacct_lab``).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from peerlab_tui.core import netns
from tests.sflow_fast.pmacct_lab import PmacctLab, collect, write_pcap

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pmacct_sfprobe.pcap"
MAX_DATAGRAMS = 40  # keep the committed file small


def main() -> int:
    """Capture and write the fixture; print what was written."""
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"tpmfa{tag}", f"tpmfb{tag}"
    netns.create_netns(ns_a)
    netns.create_netns(ns_b)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lab = PmacctLab(ns_a, ns_b, f"pmf{tag}a", Path(tmp))
            lab.setup()
            datagrams = asyncio.run(collect(lab, want_flows=20))
    finally:
        for ns in (ns_a, ns_b):
            for pid in netns.pids_in_netns(ns):
                with __import__("contextlib").suppress(ProcessLookupError):
                    __import__("os").kill(pid, 9)
            netns.delete_netns(ns)
    if not datagrams:
        print("no datagrams received from pmacctd", file=sys.stderr)
        return 1
    write_pcap(FIXTURE, datagrams[:MAX_DATAGRAMS])
    print(f"wrote {min(len(datagrams), MAX_DATAGRAMS)} datagrams to {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
