"""Shared helpers for CLI verbs: output (human or ``--json``), error mapping to exit codes, async running.

Results go to stdout; diagnostics go to stderr. Every :class:`PeerlabError` becomes a one-line
``error: ...`` on stderr (or a JSON error object on stdout with ``--json``) and its class's exit code.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import click

from peerlab_tui.core.errors import ExitCode, PeerlabError

P = ParamSpec("P")
T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Write the result as JSON to stdout.")


def to_jsonable(value: Any) -> Any:
    """Turn pydantic models (and containers of them) into plain JSON-ready data."""
    # Duck-typed so that verbs which never touch pydantic (sflow) do not pay for importing it.
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        return model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Write one JSON document to stdout."""
    click.echo(json.dumps(to_jsonable(value), indent=None, sort_keys=False))


def fail(error: PeerlabError, *, as_json: bool) -> None:
    """Report an error and exit with its class's exit code."""
    if as_json:
        payload: dict[str, Any] = {
            "error": type(error).__name__,
            "message": error.message,
            "exit_code": error.exit_code,
        }
        rule = getattr(error, "rule", None)  # client-side safety refusals name the rule they broke
        if rule is not None:
            payload["rule"] = rule
        emit_json(payload)
    click.echo(f"error: {error.message}", err=True)
    sys.exit(error.exit_code)


def handle_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Decorate a click command so PeerlabError (and Ctrl-C) become clean exits with documented codes."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return func(*args, **kwargs)
        except PeerlabError as exc:
            logging.getLogger(func.__module__).debug("command failed", exc_info=True)
            fail(exc, as_json=as_json)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        raise AssertionError("unreachable")

    return wrapper


def run_async(coro: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run a coroutine to completion from synchronous click code."""
    import asyncio  # lazily: most synchronous verbs never need the event loop machinery

    async def _wrap() -> T:
        return await coro

    return asyncio.run(_wrap())


__all__ = ["ExitCode", "emit_json", "fail", "handle_errors", "json_option", "run_async", "to_jsonable"]
