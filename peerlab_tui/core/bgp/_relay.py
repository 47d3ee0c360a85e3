"""The helper program ExaBGP runs as its ``process``: a line relay between ExaBGP and our speaker.

ExaBGP writes its events (JSON lines) and command acks (``done``/``error``) to this program's STDIN and reads
commands from its STDOUT. This relay connects to the unix socket our :class:`~peerlab_tui.core.bgp.Speaker`
owns and copies lines both ways. When either side goes away the relay exits, and ExaBGP (run with
``exabgp.api.terminate=true``) exits with it, so the speaker's supervisor sees one clear failure.

Run as ``python -I .../peerlab_tui/core/bgp/_relay.py SOCKET`` (also works with ``-m``). Only the standard
library is used, and the package is not imported, so it starts fast.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 10.0


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _exabgp_to_socket(sock: socket.socket) -> None:
    # Events and acks from ExaBGP (our stdin) go to the speaker unchanged, line by line.
    stdin = sys.stdin.buffer
    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            sock.sendall(line if line.endswith(b"\n") else line + b"\n")
    except OSError:
        pass
    os._exit(0)


def main(argv: list[str]) -> int:
    """Relay lines between ExaBGP (stdin/stdout) and the speaker's unix socket ``argv[1]``."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -I _relay.py SOCKET\n")
        return 2
    try:
        sock = _connect(argv[1])
    except OSError as exc:
        sys.stderr.write(f"relay: cannot connect to {argv[1]}: {exc}\n")
        return 1
    threading.Thread(target=_exabgp_to_socket, args=(sock,), daemon=True).start()
    stdout = sys.stdout.buffer
    reader = sock.makefile("rb")
    try:
        for line in reader:
            # Commands from the speaker go to ExaBGP, flushed at once (it reads line by line).
            stdout.write(line if line.endswith(b"\n") else line + b"\n")
            stdout.flush()
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
