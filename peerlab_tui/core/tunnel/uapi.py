"""WireGuard's cross-platform userspace API (UAPI) as wireguard-go serves it on a unix socket.

The protocol is text: a request is ``set=1`` or ``get=1`` followed by ``key=value`` lines and an empty
line; keys are hex; the reply ends with ``errno=N`` and an empty line. The socket is
``/var/run/wireguard/<ifname>.sock`` whatever namespace the interface lives in.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from peerlab_tui.core.tunnel.device import DeviceStatus, PeerConfig, PeerStatus, resolve_endpoint
from peerlab_tui.core.tunnel.errors import UapiError
from peerlab_tui.core.tunnel.keys import key_from_hex, key_to_hex, public_key

SOCKET_DIR = Path("/var/run/wireguard")


def socket_path(ifname: str) -> Path:
    """The UAPI socket of an interface."""
    return SOCKET_DIR / f"{ifname}.sock"


def peer_lines(peer: PeerConfig, *, replace_allowed_ips: bool = True) -> list[str]:
    """The ``set`` lines of one peer (added, or updated in place)."""
    lines = [f"public_key={key_to_hex(peer.public_key)}"]
    if peer.endpoint is not None:
        lines.append(f"endpoint={resolve_endpoint(peer.endpoint)}")
    lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
    if replace_allowed_ips:
        lines.append("replace_allowed_ips=true")
    lines.extend(f"allowed_ip={a}" for a in peer.allowed_ips)
    return lines


def build_set(*, private_key: str | None = None, listen_port: int | None = None,
              replace_peers: bool = False, peers: Sequence[PeerConfig] = (),
              remove: Sequence[str] = ()) -> str:
    """A complete ``set=1`` request."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={key_to_hex(private_key)}")
    if listen_port is not None:
        lines.append(f"listen_port={listen_port}")
    if replace_peers:
        lines.append("replace_peers=true")
    for key in remove:
        lines += [f"public_key={key_to_hex(key)}", "remove=true"]
    for peer in peers:
        lines += peer_lines(peer)
    return "\n".join(lines) + "\n\n"


def parse_get(ifname: str, text: str) -> DeviceStatus:
    """Parse the reply to ``get=1`` (without its ``errno`` line) into a :class:`DeviceStatus`."""
    dev_public: str | None = None
    listen_port: int | None = None
    peers: list[PeerStatus] = []
    cur: dict[str, object] | None = None

    def flush() -> None:
        if cur is not None:
            sec = int(str(cur.get("hs_sec", 0)))
            nsec = int(str(cur.get("hs_nsec", 0)))
            keepalive = int(str(cur.get("keepalive", 0)))
            allowed = cur.get("allowed", [])
            assert isinstance(allowed, list)
            peers.append(PeerStatus(
                public_key=str(cur["public_key"]),
                endpoint=str(cur["endpoint"]) if cur.get("endpoint") else None,
                allowed_ips=tuple(allowed),
                last_handshake=(sec + nsec / 1e9) if sec else None,
                rx_bytes=int(str(cur.get("rx", 0))),
                tx_bytes=int(str(cur.get("tx", 0))),
                persistent_keepalive=keepalive or None,
            ))

    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(f"{ifname}: malformed UAPI line {line!r}")
        if key == "public_key":
            flush()
            cur = {"public_key": key_from_hex(value), "allowed": []}
        elif cur is None:
            if key == "private_key":
                dev_public = public_key(key_from_hex(value))
            elif key == "listen_port":
                listen_port = int(value)
        elif key == "endpoint":
            cur["endpoint"] = value
        elif key == "last_handshake_time_sec":
            cur["hs_sec"] = value
        elif key == "last_handshake_time_nsec":
            cur["hs_nsec"] = value
        elif key == "rx_bytes":
            cur["rx"] = value
        elif key == "tx_bytes":
            cur["tx"] = value
        elif key == "persistent_keepalive_interval":
            cur["keepalive"] = value
        elif key == "allowed_ip":
            allowed = cur["allowed"]
            assert isinstance(allowed, list)
            allowed.append(value)
    flush()
    return DeviceStatus(ifname=ifname, public_key=dev_public, listen_port=listen_port, peers=tuple(peers))


class UapiClient:
    """Talks to one interface's UAPI socket; one connection per request (wireguard-go closes idle ones)."""

    def __init__(self, ifname: str, *, path: Path | None = None, timeout: float = 5.0) -> None:
        self.ifname = ifname
        self.path = path or socket_path(ifname)
        self.timeout = timeout

    def reachable(self) -> bool:
        """True when something accepts connections on the socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
            return True
        except OSError:
            return False

    def request(self, text: str) -> str:
        """Send one request and return the reply's body; a non-zero ``errno`` raises :class:`UapiError`."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                s.sendall(text.encode())
                buf = bytearray()
                while not (buf.endswith(b"\n\n") and b"errno=" in buf):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except FileNotFoundError as exc:
            raise UapiError(f"{self.ifname}: no WireGuard interface of that name (no {self.path})") from exc
        except OSError as exc:
            raise UapiError(f"{self.ifname}: UAPI socket {self.path} failed: {exc}") from exc
        reply = buf.decode(errors="replace")
        body, _, tail = reply.rpartition("errno=")
        if not tail:
            raise UapiError(f"{self.ifname}: UAPI socket closed without a reply")
        errno = int(tail.strip() or "0")
        if errno != 0:
            raise UapiError(f"{self.ifname}: wireguard-go refused the request (errno={errno})", errno=errno)
        return body

    def get(self) -> DeviceStatus:
        """``get=1``."""
        return parse_get(self.ifname, self.request("get=1\n\n"))

    def set(self, *, private_key: str | None = None, listen_port: int | None = None,
            replace_peers: bool = False, peers: Sequence[PeerConfig] = (),
            remove: Sequence[str] = ()) -> None:
        """``set=1`` (see :func:`build_set`)."""
        self.request(build_set(private_key=private_key, listen_port=listen_port, replace_peers=replace_peers,
                               peers=peers, remove=remove))
