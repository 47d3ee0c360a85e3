"""WireGuard keys: X25519 (RFC 7748) in pure Python, base64 text as ``wg genkey``/``wg pubkey`` write it,
and a private key file that is created with mode 0600 and never logged.

Key generation is rare (once per user, on rotation), so a readable big-integer Montgomery ladder is fast
enough (~1 ms) and saves a dependency.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path

from peerlab_tui.core.tunnel.errors import KeyFileError

KEY_LEN = 32
_P = 2**255 - 19
_A24 = 121665
_BASE_POINT = (9).to_bytes(32, "little")


def _clamp(scalar: bytes) -> int:
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def x25519(scalar: bytes, u_point: bytes) -> bytes:
    """The X25519 function of RFC 7748 section 5: ``scalar`` times the point with u-coordinate ``u_point``."""
    if len(scalar) != KEY_LEN or len(u_point) != KEY_LEN:
        raise ValueError("X25519 inputs must be 32 bytes")
    k = _clamp(scalar)
    x1 = int.from_bytes(u_point, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in reversed(range(255)):
        k_t = (k >> t) & 1
        swap ^= k_t
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = k_t
        a = (x2 + z2) % _P
        aa = a * a % _P
        b = (x2 - z2) % _P
        bb = b * b % _P
        e = (aa - bb) % _P
        c = (x3 + z3) % _P
        d = (x3 - z3) % _P
        da = d * a % _P
        cb = c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, x3, z2, z3 = x3, x2, z3, z2
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def decode_key(text: str) -> bytes:
    """Decode a base64 WireGuard key, or raise ``ValueError`` saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a WireGuard key must be base64 text") from exc
    if len(raw) != KEY_LEN:
        raise ValueError(f"a WireGuard key must decode to {KEY_LEN} bytes, not {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    """Base64 text of a 32-byte key."""
    if len(raw) != KEY_LEN:
        raise ValueError(f"a WireGuard key is {KEY_LEN} bytes")
    return base64.b64encode(raw).decode("ascii")


def generate_private_key() -> str:
    """A new private key (base64), clamped as ``wg genkey`` does."""
    b = bytearray(secrets.token_bytes(KEY_LEN))
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return encode_key(bytes(b))


def public_key(private_key: str) -> str:
    """The public key (base64) of a private key (base64), like ``wg pubkey``."""
    return encode_key(x25519(decode_key(private_key), _BASE_POINT))


def key_to_hex(key: str) -> str:
    """Hex form of a base64 key, as the UAPI protocol wants it."""
    return decode_key(key).hex()


def key_from_hex(text: str) -> str:
    """Base64 form of a hex key from the UAPI protocol."""
    raw = bytes.fromhex(text)
    return encode_key(raw)


def write_private_key(path: Path, private_key: str) -> None:
    """Write a private key to ``path`` atomically, created with mode 0600 (never world- or group-readable)."""
    decode_key(private_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(private_key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_private_key(path: Path) -> str:
    """Read a private key file; refuse one that others can read (as ssh does) or that is malformed."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"cannot read the WireGuard private key {path}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"the WireGuard private key {path} is accessible by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "run chmod 600 on it, or delete it and bring the tunnel up again to make a new key"
        )
    try:
        decode_key(text)
    except ValueError as exc:
        raise KeyFileError(f"{path} does not hold a WireGuard private key: {exc}") from exc
    return text.strip()


def load_or_create_private_key(path: Path, *, rotate: bool = False) -> tuple[str, bool]:
    """Return ``(private_key, created)``: the key stored at ``path``, or a new one written there (0600).

    With ``rotate`` a new key replaces the stored one.
    """
    if path.exists() and not rotate:
        return read_private_key(path), False
    key = generate_private_key()
    write_private_key(path, key)
    return key, True
