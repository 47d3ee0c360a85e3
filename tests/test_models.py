"""Wire models reject out-of-range input with a clear message (a bad route report must never become a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from peerlab_tui.core.models import ReportedRoute, RouteReport

GOOD: dict[str, Any] = {
    "rs": "rs1",
    "user_hash": "ab" * 32,
    "prefix": "2001:db8:100::/48",
    "as_path": [65001, 4294967294],
    "communities": ["65535:65535"],
    "large_communities": ["4294967295:1:2"],
    "med": 4294967295,
    "state": "filtered",
    "reason": "2001:db8:100::/48 is not leased to you",
    "rule": "not_leased",
}


def test_a_well_formed_route_is_accepted_and_its_prefix_normalised() -> None:
    """Limits are inclusive; prefixes come out canonical."""
    route = ReportedRoute.model_validate({**GOOD, "prefix": "2001:0db8:0100::/48"})
    assert route.prefix == "2001:db8:100::/48" and route.med == 2**32 - 1


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("med", 2**70, "less than or equal"),
        ("med", -1, "greater than or equal"),
        ("as_path", [2**32], "less than or equal"),
        ("as_path", [1] * 256, "at most 255"),
        ("prefix", "2001:db8::1/48", "not an IPv6 prefix"),
        ("prefix", "10.0.0.0/8", "not an IPv6 prefix"),
        ("prefix", "x" * 500, "at most 64"),
        ("communities", ["65536:1"], "not a community of the form A:B"),
        ("communities", ["1:2:3"], "not a community of the form A:B"),
        ("large_communities", ["1:2"], "not a community of the form A:B:C"),
        ("large_communities", ["4294967296:0:0"], "not a community of the form A:B:C"),
        ("user_hash", "h" * 65, "at most 64"),
        ("rs", "", "at least 1"),
        ("state", "maybe", "accepted"),
        ("reason", "r" * 1001, "at most 1000"),
    ],
)
def test_out_of_range_fields_are_rejected_with_a_message(field: str, value: Any, needle: str) -> None:
    """Each bound is enforced and the error says what is wrong."""
    with pytest.raises(ValidationError) as info:
        RouteReport.model_validate({"routes": [{**GOOD, field: value}]})
    assert needle in str(info.value)


def test_wireguard_keys_are_canonicalised() -> None:
    """Another base64 spelling of the same 32 bytes becomes the same text (no peer hijack by spelling)."""
    import base64

    from peerlab_tui.core.models import TunnelRequest

    raw = bytes(range(32))
    canonical = base64.b64encode(raw).decode()  # ends in "8=": the last 2 bits of the final char are 0
    variant = canonical[:-2] + chr(ord(canonical[-2]) + 1) + "="  # same bytes, non-zero padding bits
    assert variant != canonical and base64.b64decode(variant) == raw
    assert TunnelRequest(public_key=variant).public_key == canonical
    assert TunnelRequest(public_key=canonical).public_key == canonical
    for bad in ("", "not base64!", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValidationError):
            TunnelRequest(public_key=bad)
