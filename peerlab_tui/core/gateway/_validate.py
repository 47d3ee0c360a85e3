"""Input checks done before anything is sent, so bad input fails fast with a clear InputError."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from peerlab_tui.core.errors import InputError
from peerlab_tui.core.models import normalize_ipv6_prefix

M = TypeVar("M", bound=BaseModel)


def check_prefix(prefix: str) -> str:
    """Return the canonical IPv6 CIDR text of ``prefix`` or raise InputError."""
    if not isinstance(prefix, str):
        raise InputError(f"a prefix must be text in CIDR form, got {type(prefix).__name__}")
    if "/" not in prefix:  # ipaddress would read a bare address as a /128
        raise InputError(
            f"{prefix!r} is not an IPv6 prefix in CIDR form (e.g. 2001:db8:100::/48): the /LENGTH is missing"
        )
    try:
        return normalize_ipv6_prefix(prefix)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def check_hours(hours: int) -> int:
    """Return ``hours`` when it is a positive whole number of hours, else raise InputError."""
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise InputError(f"the lease duration must be a positive whole number of hours, got {hours!r}")
    return hours


def check_name(name: str, what: str) -> str:
    """Return a non-empty single-line name (user, route server, user hash) or raise InputError."""
    if not isinstance(name, str) or not name.strip() or any(not c.isprintable() for c in name):
        raise InputError(f"{what} must be a non-empty printable name, got {name!r}")
    return name.strip()


def segment(value: str) -> str:
    """URL-encode one path segment completely: the ``/`` of a CIDR must not split the path."""
    return quote(value, safe="")


def build(model: type[M], what: str, **fields: object) -> M:
    """Build a request model, turning pydantic's validation errors into one InputError."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"invalid {what}: {problems}") from exc
