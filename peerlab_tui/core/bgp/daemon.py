"""The long-running user-side process (``bgp serve``) and its JSON-lines control socket.

``bgp up`` writes a :class:`DaemonSpec` (the :class:`UserSideSpec`: options, leases, safety settings, gateway
URL) to ``STATE_DIR/bgp/daemon.json`` and starts ``peerlab-tui bgp serve``, which runs :func:`serve`: a
:class:`UserSide` (the WireGuard tunnel when it is not up, the :class:`Speaker`, the lease refresh; the token
comes from the environment, never from a file) and the control socket ``STATE_DIR/bgp/control.sock`` (mode
0600). Each connection carries one request line ``{"op": ..., ...}`` and gets one answer line ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": class, "message": ..., "exit_code": n, "rule": ...}``;
:class:`ControlClient` turns the latter back into the same kind of :class:`PeerlabError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peerlab_tui.core.bgp.errors import (
    BgpError,
    CommandRejectedError,
    CommandTimeoutError,
    ExaBgpError,
    MalformedError,
    NotAnnouncedError,
    SafetyError,
    SpeakerNotRunningError,
    UnknownRouteServerError,
)
from peerlab_tui.core.bgp.model import Announcement
from peerlab_tui.core.bgp.userside import UserSide, UserSideSpec, bgp_dir
from peerlab_tui.core.errors import ConfigError, ExitCode, InputError, PeerlabError
from peerlab_tui.core.gateway import GatewayClient

log = logging.getLogger(__name__)

SPEC_FILE = "daemon.json"
CONTROL_SOCKET = "control.sock"
PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
REQUEST_LIMIT = 1 << 20

DaemonSpec = UserSideSpec

__all__ = ["CONTROL_SOCKET", "LOG_FILE", "PID_FILE", "SPEC_FILE", "ControlClient", "Daemon", "DaemonSpec",
           "bgp_dir", "control_path", "daemon_pid", "read_spec", "rebuild_error", "serve", "write_spec"]


def control_path(state_dir: Path) -> Path:
    """The control socket of the daemon of ``state_dir`` (refused when too long for a unix socket)."""
    path = bgp_dir(state_dir) / CONTROL_SOCKET
    if len(str(path)) > 100:
        raise ConfigError(f"the state directory path is too long for a unix socket ({path}); use a shorter "
                          "--state-dir")
    return path


def daemon_pid(state_dir: Path) -> int | None:
    """The PID the daemon of ``state_dir`` recorded (None when it recorded none)."""
    try:
        return int((bgp_dir(state_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


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


class Daemon:
    """A :class:`UserSide` served on the control socket."""

    def __init__(self, state_dir: Path, spec: DaemonSpec, *, gateway: GatewayClient | None = None,
                 **speaker_options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.spec = spec
        self.dir = bgp_dir(self.state_dir)
        self.socket_path = control_path(self.state_dir)
        self.userside = UserSide(self.state_dir, spec, gateway=gateway, **speaker_options)
        self._stop = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Record the PID, start the user side (tunnel, speaker), then listen on the control socket."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.socket_path.exists():
            if await _answers(self.socket_path):
                raise BgpError(f"a BGP daemon already runs for {self.state_dir} ({self.socket_path})")
            self.socket_path.unlink()
        # First, so that whoever started us can stop us by PID even while the tunnel comes up.
        (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")
        await self.userside.start()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.socket_path),
                                                       limit=REQUEST_LIMIT)
        os.chmod(self.socket_path, 0o600)

    async def wait(self) -> None:
        """Until ``down`` (or :meth:`request_stop`)."""
        await self._stop.wait()

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers, the ``down`` request)."""
        self._stop.set()

    async def stop(self) -> dict[str, Any]:
        """Stop the user side (sessions close; a tunnel it created goes), then stop serving."""
        try:
            return await self.userside.stop()
        finally:
            if self._server is not None:
                self._server.close()
            for name in (CONTROL_SOCKET, PID_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / name).unlink()

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
        side = self.userside
        sp = side.speaker
        if op == "status":
            status = sp.status().model_dump(mode="json")
            status["leases"] = [lease.model_dump(mode="json") for lease in sp.leases]
            status["daemon_pid"] = os.getpid()
            status["netns"] = side.netns
            status["options"] = self.spec.options()
            status["exabgp_version"] = sp.exabgp_version
            status["tunnel"] = {"created_by_bgp": side.tunnel_created,
                                "interfaces": [r.ifname for r in side.tunnel.load_state()]}
            return status
        if op in ("preview", "announce"):
            try:
                ann = Announcement.model_validate(request.get("announcement"))
            except ValidationError as exc:
                raise InputError(f"bad announcement: {exc}") from exc
            preview = await side.preview(ann) if op == "preview" else await side.announce(ann)
            return preview.model_dump(mode="json")
        if op == "withdraw":
            rs = request.get("rs")
            return {"commands": await sp.withdraw(str(request.get("prefix", "")), rs)}
        if op == "received":
            return [r.model_dump(mode="json") for r in sp.received(request.get("rs"))]
        if op == "down":
            # Stopped before answering, so the answer says what went (and a tunnel we created is gone).
            stopped = await self.stop()
            self.request_stop()
            return {"stopping": True, **stopped}
        raise InputError(f"unknown control request {op!r}")


async def serve(state_dir: Path, *, gateway: GatewayClient | None = None, **speaker_options: Any) -> None:
    """Run the daemon of ``state_dir`` until ``down``, SIGTERM or SIGINT."""
    daemon = Daemon(state_dir, read_spec(state_dir), gateway=gateway, **speaker_options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        log.info("BGP daemon up: control socket %s", daemon.socket_path)
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
    cls.__name__: cls for cls in (SpeakerNotRunningError, ExaBgpError, InputError, ConfigError, BgpError,
                                  NotAnnouncedError)
}
_RULED: dict[str, type[SafetyError]] = {"SafetyError": SafetyError}
_ONE_ARG_RULED: dict[str, Callable[[str], SafetyError]] = {"MalformedError": MalformedError,
                                                "UnknownRouteServerError": UnknownRouteServerError}


def rebuild_error(answer: dict[str, Any]) -> PeerlabError:
    """The :class:`PeerlabError` a failed control answer stands for (same class, message, rule, exit code)."""
    message = str(answer.get("message", "the BGP daemon failed"))
    name = str(answer.get("error"))
    error: PeerlabError
    if name in _ONE_ARG_RULED:
        error = _ONE_ARG_RULED[name]("")
    elif name in _RULED:
        error = _RULED[name](str(answer.get("rule", "")), "")
    elif name in ("CommandRejectedError", "CommandTimeoutError"):
        error = (CommandRejectedError if name == "CommandRejectedError" else CommandTimeoutError)(
            message, command=str(answer.get("command", "")))
    elif name in _ERRORS:
        error = _ERRORS[name](message)
    else:
        by_code: dict[Any, type[PeerlabError]] = {ExitCode.USAGE: InputError,
                                                  ExitCode.UNREACHABLE: SpeakerNotRunningError,
                                                  ExitCode.NOT_FOUND: NotAnnouncedError}
        error = by_code.get(answer.get("exit_code"), ExaBgpError)(message)
    # The daemon's message is the whole text already (a SafetyError's includes its rule).
    error.message = message
    error.args = (message,)
    return error


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
