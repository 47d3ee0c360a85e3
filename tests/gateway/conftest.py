"""Fixtures of the gateway tests: the same suite runs on SQLite and on a throwaway PostgreSQL cluster.

Starting a gateway costs a few seconds (two fresh interpreters), so tests that only need the default
settings share one gateway per module and backend (``shared_gw``) and use unique user names; tests that
need particular settings start their own with ``make_gateway``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayHandle, start_gateway
from tests.support.postgres import PostgresCluster, postgres_cluster  # noqa: F401  (fixture)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

GatewayFactory = Callable[..., GatewayHandle]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return str(request.param)


@contextlib.contextmanager
def _database(backend: str, directory: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'gw-{secrets.token_hex(4)}.sqlite'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database of the backend under test."""
    with _database(backend, tmp_path, request) as url:
        yield url


@pytest.fixture
def make_gateway(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayFactory]:
    """Start gateways (each on a fresh database of the backend) with extra serve arguments or a config."""
    with contextlib.ExitStack() as stack:

        def factory(extra_args: Sequence[str] = (), config: dict[str, Any] | None = None) -> GatewayHandle:
            url = stack.enter_context(_database(backend, tmp_path, request))
            return stack.enter_context(
                start_gateway(tmp_path, db_url=url, extra_args=extra_args, config=config)
            )

        yield factory


@pytest.fixture(scope="module")
def shared_gw(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[GatewayHandle]:
    """A default gateway shared by the tests of one module (use unique user names)."""
    directory = tmp_path_factory.mktemp("gw")
    with _database(backend, directory, request) as url, start_gateway(directory, db_url=url) as handle:
        yield handle


def unique(stem: str) -> str:
    """A user or token name unique within a shared gateway."""
    return f"{stem}-{secrets.token_hex(3)}"
