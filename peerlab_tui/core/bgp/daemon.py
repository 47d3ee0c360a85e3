"""The long-running user-side BGP process and its JSON-lines control socket.

``bgp up`` writes a :class:`DaemonSpec` (speaker configuration, leases, safety settings, gateway URL) to
``STATE_DIR/bgp/daemon.json`` and starts ``peerlab-tui bgp serve``, which runs :func:`serve`: the
:class:`Speaker`, the lease refresh from the gateway (the token comes from the environment, never from a
file), and the control socket ``STATE_DIR/bgp/control.sock`` (mode 0600). Each connection carries one
request line ``{"op": ..., ...}`` and gets one answer line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": class, "message": ..., "exit_code": n, "rule": ...}``; :class:`ControlClient` turns
the latter back into the same kind of :class:`PeerlabError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from peerlab_tui.core.bgp.errors import (
    BgpError,
    CommandRejectedError,
    ExaBgpError,
    SafetyError,
    SpeakerNotRunningError,
    UnknownRouteServerError,
)
from peerlab_tui.core.bgp.model import Announcement, SpeakerConfig
from peerlab_tui.core.bgp.safety import SafetySettings
from peerlab_tui.core.bgp.speaker import Speaker
from peerlab_tui.core.errors import ConfigError, ExitCode, InputError, PeerlabError
from peerlab_tui.core.models import Lease, UserInfo

log = logging.getLogger(__name__)

SPEC_FILE = "daemon.json"
CONTROL_SOCKET = "control.sock"
PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
REQUEST_LIMIT = 1 << 20


def bgp_dir(state_dir: Path) -> Path:
    """Where the BGP daemon keeps its files inside the user state directory."""
    return Path(state_dir) / "bgp"


def control_path(state_dir: Path) -> Path:
    """The control socket of the daemon of ``state_dir`` (refused when too long for a unix socket)."""
    path = bgp_dir(state_dir) / CONTROL_SOCKET
    if len(str(path)) > 100:
        raise ConfigError(f"the state directory path is too long for a unix socket ({path}); use a shorter "
                          "--state-dir")
    return path


class DaemonSpec(BaseModel):
    """What ``bgp serve`` runs, written by ``bgp up`` (no secrets in it)."""

    model_config = ConfigDict(extra="forbid")

    speaker: SpeakerConfig
    leases: list[Lease] = Field(default_factory=list)
    safety: dict[str, float | int | None] = Field(default_factory=dict)
    gateway_url: str | None = None
    lease_refresh_seconds: float = 60.0

    def safety_settings(self) -> SafetySettings:
        """The :class:`SafetySettings` of this spec."""
        return dataclasses.replace(SafetySettings(), **self.safety)  # type: ignore[arg-type]


def write_spec(state_dir: Path, spec: DaemonSpec) -> Path:
    """Write the spec (mode 0600) and return its path."""
    directory = bgp_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / SPEC_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(spec.model_dump_json(indent=2))
    return path


def read_spec(state_dir: Path) -> DaemonSpec:
    """Read the spec ``bgp up`` wrote."""
    path = bgp_dir(state_dir) / SPEC_FILE
    try:
        return DaemonSpec.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no BGP daemon configuration in {path}: run 'peerlab-tui bgp up'") from exc
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid BGP daemon configuration: {exc}") from exc


LeaseSource = Callable[[], Awaitable[UserInfo]]


class Daemon:
    """A :class:`Speaker` served on the control socket, with its leases refreshed from the gateway."""

    def __init__(self, state_dir: Path, spec: DaemonSpec, *, lease_source: LeaseSource | None = None,
                 **speaker_options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.spec = spec
        self.dir = bgp_dir(self.state_dir)
        self.socket_path = control_path(self.state_dir)
        self.speaker = Speaker(spec.speaker, self.dir, leases=spec.leases, safety=spec.safety_settings(),
                               **speaker_options)
        self._lease_source = lease_source
        self._stop = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the speaker, then listen on the control socket."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.socket_path.exists():
            if await _answers(self.socket_path):
                raise BgpError(f"a BGP daemon already runs for {self.state_dir} ({self.socket_path})")
            self.socket_path.unlink()
        await self.speaker.start()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.socket_path),
                                                       limit=REQUEST_LIMIT)
        os.chmod(self.socket_path, 0o600)
        (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")
        if self._lease_source is not None:
            self._refresh = asyncio.create_task(self._refresh_leases(), name="bgp-lease-refresh")

    async def wait(self) -> None:
        """Until ``down`` (or :meth:`request_stop`)."""
        await self._stop.wait()

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers, the ``down`` request)."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop serving and stop the speaker (its sessions close)."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._server is not None:
            self._server.close()
        await self.speaker.stop()
        for name in (CONTROL_SOCKET, PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    async def _refresh_leases(self) -> None:
        assert self._lease_source is not None
        while True:
            await asyncio.sleep(self.spec.lease_refresh_seconds)
            try:
                info = await self._lease_source()
            except PeerlabError as exc:  # keep the last known leases; the schedule still follows them
                log.warning("could not refresh the leases from the gateway: %s", exc)
                continue
            self.speaker.set_leases(info.active_leases)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 30)
            answer = await self._dispatch(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise InputError("a control request is a JSON object")
            result = await self.handle(request)
            return {"ok": True, "result": result}
        except PeerlabError as exc:
            answer: dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": exc.message,
                                      "exit_code": exc.exit_code}
            if isinstance(exc, SafetyError):
                answer["rule"] = exc.rule
            return answer
        except ValueError as exc:
            return {"ok": False, "error": "InputError", "message": f"bad request: {exc}",
                    "exit_code": ExitCode.USAGE}

    async def handle(self, request: dict[str, Any]) -> Any:
        """Answer one control request (``status``, ``preview``, ``announce``, ``withdraw``, ``received``,
        ``down``)."""
        op = request.get("op")
        sp = self.speaker
        if op == "status":
            status = sp.status().model_dump(mode="json")
            status["leases"] = [lease.model_dump(mode="json") for lease in sp.leases]
            status["daemon_pid"] = os.getpid()
            status["netns"] = self.spec.speaker.netns
            return status
        if op in ("preview", "announce"):
            try:
                ann = Announcement.model_validate(request.get("announcement"))
            except ValidationError as exc:
                raise InputError(f"bad announcement: {exc}") from exc
            preview = sp.preview(ann) if op == "preview" else await sp.announce(ann)
            return preview.model_dump(mode="json")
        if op == "withdraw":
            rs = request.get("rs")
            return {"commands": await sp.withdraw(str(request.get("prefix", "")), rs)}
        if op == "received":
            return [r.model_dump(mode="json") for r in sp.received(request.get("rs"))]
        if op == "down":
            self.request_stop()
            return {"stopping": True}
        raise InputError(f"unknown control request {op!r}")


async def serve(state_dir: Path, *, lease_source: LeaseSource | None = None, **speaker_options: Any) -> None:
    """Run the daemon of ``state_dir`` until ``down``, SIGTERM or SIGINT."""
    daemon = Daemon(state_dir, read_spec(state_dir), lease_source=lease_source, **speaker_options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    await daemon.start()
    log.info("BGP daemon up: control socket %s", daemon.socket_path)
    try:
        await daemon.wait()
    finally:
        await daemon.stop()


async def _answers(path: Path) -> bool:
    try:
        await ControlClient(path).request("status", timeout=5)
    except PeerlabError:
        return False
    return True


_ERRORS: dict[str, type[PeerlabError]] = {
    cls.__name__: cls for cls in (SpeakerNotRunningError, ExaBgpError, UnknownRouteServerError, InputError,
                                  ConfigError, BgpError, CommandRejectedError)
}


def rebuild_error(answer: dict[str, Any]) -> PeerlabError:
    """The :class:`PeerlabError` a failed control answer stands for (same message, rule and exit code)."""
    message = str(answer.get("message", "the BGP daemon failed"))
    if answer.get("error") == "SafetyError":
        error = SafetyError(str(answer.get("rule", "")), "")
        error.message = message
        error.args = (message,)
        return error
    cls = _ERRORS.get(str(answer.get("error")))
    if cls is not None and cls is not CommandRejectedError:
        return cls(message)
    code = answer.get("exit_code")
    by_code: dict[Any, type[PeerlabError]] = {ExitCode.USAGE: InputError,
                                              ExitCode.UNREACHABLE: SpeakerNotRunningError,
                                              ExitCode.NOT_FOUND: UnknownRouteServerError}
    return by_code.get(code, ExaBgpError)(message)


class ControlClient:
    """Talks to a running daemon over its control socket."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> ControlClient:
        """The client of the daemon of ``state_dir``."""
        return cls(control_path(state_dir))

    async def request(self, op: str, *, timeout: float = 60.0, **params: Any) -> Any:  # noqa: ASYNC109
        """Send one request and return its result; a failure raises the daemon's error."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=REQUEST_LIMIT), timeout)
        except (OSError, TimeoutError) as exc:
            raise SpeakerNotRunningError(f"no BGP daemon answers on {self.path} ({exc}); start it with "
                                         "'peerlab-tui bgp up'") from exc
        try:
            writer.write(json.dumps({"op": op, **params}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, TimeoutError) as exc:
            raise SpeakerNotRunningError(f"the BGP daemon did not answer ({exc})") from exc
        finally:
            writer.close()
        if not line:
            raise SpeakerNotRunningError("the BGP daemon closed the connection without an answer")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise rebuild_error(answer)
        return answer.get("result")
