"""A minimal BGP speaker for tests: sends UPDATEs a BIRD client cannot craft (AS_SET segments, an empty
AS_PATH). Run inside the user's namespace: ``python rawbgp.py JSON``; prints ``established`` once the
session is up and the UPDATEs are sent, then keeps the session alive until killed or notified.

JSON: {"local": addr, "peer": addr, "asn": n, "router_id": "a.b.c.d",
       "updates": [{"prefixes": [...], "segments": [[is_set, [asn, ...]], ...]}]}
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time
from typing import Any

KEEPALIVE_EVERY = 20.0


def message(kind: int, body: bytes) -> bytes:
    """A BGP message: marker, length, type, body."""
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def open_message(asn: int, router_id: str, hold: int = 90) -> bytes:
    """OPEN with IPv6 unicast and 4-octet AS capabilities."""
    caps = bytes([1, 4, 0, 2, 0, 1]) + bytes([65, 4]) + struct.pack("!I", asn)
    opt = bytes([2, len(caps)]) + caps
    return message(1, struct.pack("!BHH4sB", 4, asn if asn < 65536 else 23456, hold,
                                  socket.inet_aton(router_id), len(opt)) + opt)


def attribute(flags: int, code: int, value: bytes) -> bytes:
    """A path attribute (extended length when needed)."""
    if len(value) > 255:
        return struct.pack("!BBH", flags | 0x10, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def update(prefixes: list[str], segments: list[tuple[bool, list[int]]], next_hop: str) -> bytes:
    """UPDATE: ORIGIN IGP, the AS_PATH exactly as given (4-octet), MP_REACH_NLRI for IPv6 unicast."""
    path = b"".join(struct.pack("!BB", 1 if is_set else 2, len(asns)) + b"".join(struct.pack("!I", a)
                                                                                 for a in asns)
                    for is_set, asns in segments)
    nlri = b""
    for text in prefixes:
        net = ipaddress.IPv6Network(text)
        nlri += bytes([net.prefixlen]) + net.network_address.packed[:(net.prefixlen + 7) // 8]
    mp = struct.pack("!HBB", 2, 1, 16) + ipaddress.IPv6Address(next_hop).packed + b"\x00" + nlri
    attrs = attribute(0x40, 1, b"\x00") + attribute(0x40, 2, path) + attribute(0x80, 14, mp)
    return message(2, struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """One message (type, body); EOFError when the peer closed."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the peer closed the session")
            data += chunk
        return data

    header = exactly(19)
    length, kind = struct.unpack("!HB", header[16:19])
    return kind, exactly(length - 19)


def connect(local: str, peer: str, deadline: float) -> socket.socket:
    """Connect to the peer's port 179 from ``local``, retrying until ``deadline`` (it may be passive)."""
    while True:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.bind((local, 0))
            sock.connect((peer, 179))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main(spec: dict[str, Any]) -> int:
    """Run one session: OPEN, KEEPALIVE, the UPDATEs, then keepalives until the peer ends it."""
    sock = connect(spec["local"], spec["peer"], time.monotonic() + 60)
    sock.sendall(open_message(spec["asn"], spec["router_id"]))
    kind, body = read_message(sock)
    if kind != 1:
        print(f"expected OPEN, got type {kind}: {body.hex()}", file=sys.stderr, flush=True)
        return 1
    sock.sendall(message(4, b""))
    while True:
        kind, body = read_message(sock)
        if kind == 3:
            print(f"NOTIFICATION {body.hex()}", file=sys.stderr, flush=True)
            return 1
        if kind == 4:
            break
    for upd in spec["updates"]:
        sock.sendall(update(upd["prefixes"], [(bool(s), list(a)) for s, a in upd["segments"]], spec["local"]))
    print("established", flush=True)
    sock.settimeout(None)
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([sock], [], [], 1.0)
        if ready:
            kind, body = read_message(sock)
            if kind == 3:
                print(f"NOTIFICATION {body.hex()}", file=sys.stderr, flush=True)
                return 1
        if time.monotonic() - last > KEEPALIVE_EVERY:
            sock.sendall(message(4, b""))
            last = time.monotonic()


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
