"""Fixtures of the gateway-client tests: one real gateway shared by the integration modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.gateway import GatewayHandle, start_gateway

RS_KEY = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="  # any 32-byte base64 value

# One route server, so tunnel registration and route reports have something to refer to.
GATEWAY_CONFIG = {
    "route_servers": [
        {
            "name": "rs1",
            "public_key": RS_KEY,
            "endpoint": "127.0.0.1:51820",
            "overlay_network": "fd00:100::/64",
            "overlay_address": "fd00:100::1",
            "asn": 64500,
        }
    ]
}


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    """A real gateway (SQLite, default limits: 1 active lease per user) shared by the client tests.

    Tests sharing it create their own uniquely named users, so they do not see each other's state.
    """
    with start_gateway(tmp_path_factory.mktemp("client-gw"), config=GATEWAY_CONFIG) as handle:
        yield handle
