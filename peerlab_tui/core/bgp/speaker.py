"""The embedded BGP speaker: ExaBGP as a supervised subprocess, driven through its process API.

ExaBGP runs our relay (:mod:`peerlab_tui.core.bgp._relay`) as its API process; the relay connects to a unix
socket this object owns. Commands go out one line at a time and each waits for ExaBGP's ``done``/``error``
ack; JSON events come back and keep the session states and the Adj-RIB-In current. When ExaBGP dies it is
restarted with a backoff and every announcement that should be up is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peerlab_tui.core.bgp import render
from peerlab_tui.core.bgp.errors import (
    CommandRejectedError,
    CommandTimeoutError,
    ExaBgpError,
    NotAnnouncedError,
    SpeakerNotRunningError,
    UnknownRouteServerError,
)
from peerlab_tui.core.bgp.events import (
    ACK_LINES,
    FsmEvent,
    NotificationEvent,
    StateEvent,
    UpdateEvent,
    parse_event,
)
from peerlab_tui.core.bgp.model import (
    AnnouncedRoute,
    Announcement,
    NeighborConfig,
    Preview,
    ReceivedRoute,
    SessionState,
    SessionStatus,
    SpeakerConfig,
    SpeakerEvent,
    SpeakerStatus,
)
from peerlab_tui.core.bgp.safety import (
    REMOTE_CHANGE_INTERVAL,
    SafetySettings,
    check_announcement,
    lease_actions,
    parse_prefix,
    unknown_route_servers,
    withdraw_time,
)
from peerlab_tui.core.models import Lease
from peerlab_tui.core.netns import netns_prefix

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
HISTORY_FILE = "history.json"
HISTORY_KEEP = timedelta(days=1)  # changes older than this (and than the interval) are forgotten
EXABGP_MIN = (5, 0, 13)
EXABGP_BELOW = (5, 1)
_VERSION_RE = re.compile(r"ExaBGP\s*:\s*(\d+)\.(\d+)\.(\d+)")
_checked_versions: dict[str, str] = {}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def find_exabgp() -> str:
    """The exabgp executable: beside our interpreter (the venv) first, else on PATH."""
    sibling = Path(sys.executable).parent / "exabgp"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("exabgp")
    if found is None:
        raise ExaBgpError("exabgp is not installed (pip install 'exabgp>=5.0.13,<5.1')")
    return found


def parse_exabgp_version(text: str) -> tuple[int, int, int] | None:
    """The version in ``exabgp version``'s output (``ExaBGP : 5.0.15``), None when absent."""
    m = _VERSION_RE.search(text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


async def check_exabgp_version(exabgp: str) -> str:
    """Refuse an ExaBGP outside 5.0.13 <= version < 5.1 (its API and JSON differ); return the version.

    Checked once per executable per process (``exabgp version`` takes a quarter of a second).
    """
    if exabgp in _checked_versions:
        return _checked_versions[exabgp]
    try:
        proc = await asyncio.create_subprocess_exec(exabgp, "version", stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except (OSError, TimeoutError) as exc:
        raise ExaBgpError(f"cannot run '{exabgp} version': {exc}") from exc
    version = parse_exabgp_version(out.decode(errors="replace"))
    if version is None:
        raise ExaBgpError(f"'{exabgp} version' printed no version: {out.decode(errors='replace')[:200]!r}")
    text = ".".join(map(str, version))
    if not EXABGP_MIN <= version < (*EXABGP_BELOW, 0):
        raise ExaBgpError(f"ExaBGP {text} at {exabgp} is not supported: need >= 5.0.13 and < 5.1 "
                          "(pip install 'exabgp>=5.0.13,<5.1')")
    _checked_versions[exabgp] = text
    return text


@dataclass
class _Session:
    neighbor: NeighborConfig
    state: SessionState = SessionState.IDLE
    since: datetime | None = None
    last_error: str | None = None
    last_notification: str | None = None
    rib: dict[str, ReceivedRoute] = field(default_factory=dict)


class Subscription:
    """A stream of :class:`SpeakerEvent` (bounded: the oldest events are dropped when a reader lags)."""

    def __init__(self, owner: Speaker, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[SpeakerEvent | None] = asyncio.Queue(maxsize)

    def _put(self, event: SpeakerEvent | None) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def get(self, wait: float | None = None) -> SpeakerEvent:
        """The next event (``TimeoutError`` after ``wait`` s; ``StopAsyncIteration`` once closed)."""
        event = await asyncio.wait_for(self._queue.get(), wait)
        if event is None:
            raise StopAsyncIteration
        return event

    def __aiter__(self) -> AsyncIterator[SpeakerEvent]:
        return self

    async def __anext__(self) -> SpeakerEvent:
        return await self.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._owner._subscribers.discard(self)
        self._put(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Speaker:
    """The user's BGP speaker: one ExaBGP process, one neighbor per route server."""

    def __init__(self, config: SpeakerConfig, state_dir: Path, *, leases: Sequence[Lease] = (),
                 safety: SafetySettings | None = None, clock: Clock = _utcnow, exabgp: str | None = None,
                 command_timeout: float = 15.0, connect_timeout: float = 30.0,
                 lease_check_interval: float = 1.0,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0, log_level: str = "INFO") -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.safety = safety or SafetySettings()
        self._leases: list[Lease] = list(leases)
        self._clock = clock
        self._exabgp = exabgp
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._lease_check_interval = lease_check_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._log_level = log_level
        self._by_name = {n.name: n for n in config.neighbors}
        self._by_peer = {n.address: n.name for n in config.neighbors}
        self._sessions = {n.name: _Session(n) for n in config.neighbors}
        self._desired: dict[tuple[str, str], AnnouncedRoute] = {}  # (prefix, rs) -> what is up
        self._history: dict[str, datetime] = {}  # prefix -> last change (persisted in history.json)
        self._warned: set[tuple[str, datetime | None]] = set()  # (prefix, lease end) warned about
        self._subscribers: set[Subscription] = set()
        self._pending: deque[asyncio.Future[bool]] = deque()
        self._op_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._first_start: asyncio.Future[None] | None = None
        self._running = False
        self._stopping = False
        self._socket_dir: Path | None = None
        self.socket_path = self.state_dir / "exabgp-relay.sock"
        self.config_path = self.state_dir / "exabgp.conf"
        self.log_path = self.state_dir / "exabgp.log"
        self.history_path = self.state_dir / HISTORY_FILE
        self.exabgp_version: str | None = None
        self.stray_acks = 0  # acks that arrived with no command waiting (skipped)
        self.restarts = 0
        self.last_restart_reason: str | None = None
        self.last_restart_at: datetime | None = None
        self.sent_commands: list[str] = []  # every command ExaBGP acknowledged or refused, in order

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Render the configuration, start ExaBGP and wait until its relay is connected."""
        if self._running:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.exabgp_version = await check_exabgp_version(self._exabgp or find_exabgp())
        self._load_history()
        if len(str(self.socket_path)) > SOCKET_PATH_MAX:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="peerlab-bgp-"))
            self.socket_path = self._socket_dir / "relay.sock"
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_relay, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        text = render.render_config(self.config, str(self.socket_path))
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        self._running = True
        self._stopping = False
        self._first_start = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._supervise(), name="bgp-supervisor"),
                       asyncio.create_task(self._lease_loop(), name="bgp-leases")]
        try:
            await asyncio.wait_for(asyncio.shield(self._first_start), self._connect_timeout)
        except (TimeoutError, ExaBgpError) as exc:
            await self.stop()
            if isinstance(exc, ExaBgpError):
                raise
            raise ExaBgpError(f"exabgp did not start within {self._connect_timeout:g} s; "
                              f"log {self.log_path}: {self._log_tail()}") from exc

    async def stop(self) -> None:
        """Stop ExaBGP (its sessions close with a NOTIFICATION) and release the socket."""
        self._stopping = True
        self._ready.clear()
        await self._terminate_process()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._running = False
        for sub in list(self._subscribers):
            sub.close()

    async def __aenter__(self) -> Speaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pid(self) -> int | None:
        """PID of the running ExaBGP (None while it is down)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def _terminate_process(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue

    def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._conn is not None and not self._conn.done():
            self._conn.set_result((reader, writer))
        else:
            log.warning("unexpected connection on the relay socket; closing it")
            writer.close()

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            try:
                reason = await self._run_once()
            except ExaBgpError as exc:
                reason = exc.message
                if self._first_start is not None and not self._first_start.done():
                    self._first_start.set_exception(exc)
                    return
            if self._stopping:
                return
            self.restarts += 1
            self.last_restart_reason = reason
            self.last_restart_at = self._clock()
            if asyncio.get_running_loop().time() - started > 60:
                delay = self._backoff_initial
            log.warning("exabgp stopped (%s); restarting in %.1f s", reason, delay)
            self._emit("restart", message=f"{reason}; restarting in {delay:g} s",
                       data={"restarts": self.restarts, "reason": reason})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    def _argv(self) -> list[str]:
        exabgp = self._exabgp or find_exabgp()
        return [*netns_prefix(self.config.netns), exabgp, str(self.config_path)]

    async def _run_once(self) -> str:
        """Run ExaBGP until it exits; return why it stopped."""
        loop = asyncio.get_running_loop()
        self._conn = loop.create_future()
        env = {**os.environ, **render.exabgp_env(self._log_level)}
        logfd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=logfd,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, cwd=str(self.state_dir))
        except OSError as exc:
            raise ExaBgpError(f"cannot run exabgp: {exc}") from exc
        finally:
            os.close(logfd)
        self._proc = proc
        exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        waiters: set[asyncio.Future[object]] = {self._conn, exited}  # type: ignore[arg-type]
        done, _ = await asyncio.wait(waiters, timeout=self._connect_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._conn not in done:
            if exited not in done:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            self._conn.cancel()
            raise ExaBgpError(f"exabgp exited (code {proc.returncode}) before its API process connected; "
                              f"log {self.log_path}: {self._log_tail()}")
        reader, writer = self._conn.result()
        self._writer = writer
        reader_task = asyncio.create_task(self._read_loop(reader), name="bgp-reader")
        try:
            async with self._op_lock:
                await self._restore()
            self._ready.set()
            if self._first_start is not None and not self._first_start.done():
                self._first_start.set_result(None)
            rc = await exited
            return f"exabgp exited with code {rc}"
        finally:
            self._ready.clear()
            self._writer = None
            writer.close()
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
            self._fail_pending()
            self._reset_sessions("exabgp stopped")

    def _fail_pending(self) -> None:
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(ExaBgpError("exabgp stopped before acknowledging the command"))

    def _reset_sessions(self, reason: str) -> None:
        for session in self._sessions.values():
            if session.state is not SessionState.IDLE:
                session.last_error = reason
            session.state = SessionState.IDLE
            session.since = None
            session.rib.clear()

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    async def _restore(self) -> None:
        # Everything that should be up goes out again, in the order it was first announced.
        for key, route in list(self._desired.items()):
            try:
                await self._send(route.command)
            except ExaBgpError as exc:
                log.error("could not restore %s on %s: %s", key[0], key[1], exc)
                self._emit("error", rs=key[1], message=f"could not restore {key[0]}: {exc}")

    # --- change history (rate limit) ---------------------------------------------------------------------

    def _load_history(self) -> None:
        """Load the change history, so a restarted speaker (``bgp down && bgp up``) keeps the rate limit."""
        try:
            data = json.loads(self.history_path.read_text())
            loaded = {str(k): datetime.fromisoformat(v) for k, v in dict(data.get("changes", {})).items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A damaged file must not stop the speaker; the limit then starts afresh (and says so).
            log.warning("ignoring the unreadable change history %s: %s", self.history_path, exc)
            return
        for prefix, when in loaded.items():
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if prefix not in self._history or self._history[prefix] < when:
                self._history[prefix] = when

    def _record_change(self, prefix: str) -> None:
        self._history[prefix] = self._clock()
        interval = max(self.safety.min_change_interval, REMOTE_CHANGE_INTERVAL)
        keep = max(HISTORY_KEEP, timedelta(seconds=interval))
        cutoff = self._clock() - keep
        self._history = {p: t for p, t in self._history.items() if t >= cutoff}
        data = {"version": 1, "changes": {p: t.isoformat() for p, t in sorted(self._history.items())}}
        tmp = self.history_path.with_name(f".{HISTORY_FILE}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.history_path)  # atomic: a reader sees the old or the new file, never half
        except OSError as exc:
            log.error("could not save the change history %s: %s", self.history_path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def history(self) -> dict[str, datetime]:
        """Prefix -> time of its last change (what the rate limit checks)."""
        return dict(self._history)

    # --- commands ----------------------------------------------------------------------------------------

    async def _send(self, line: str) -> None:
        writer = self._writer
        if writer is None:
            raise SpeakerNotRunningError("exabgp is not running (it may be restarting)")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        log.debug("-> exabgp: %s", line)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            fut.cancel()
            raise ExaBgpError(f"lost the connection to exabgp: {exc}") from exc
        self.sent_commands.append(line)
        try:
            ok = await asyncio.wait_for(fut, self._command_timeout)
        except TimeoutError as exc:
            # The cancelled future stays queued, so a late ack is matched to it and not to the next command.
            raise CommandTimeoutError(f"exabgp did not acknowledge within {self._command_timeout:g} s: "
                                      f"{line}", command=line) from exc
        if not ok:
            raise CommandRejectedError(f"exabgp refused the command (see {self.log_path}): {line}",
                                       command=line)

    async def _wait_ready(self) -> None:
        if not self._running:
            raise SpeakerNotRunningError("the speaker is not started")
        try:
            await asyncio.wait_for(self._ready.wait(), self._connect_timeout)
        except TimeoutError as exc:
            raise SpeakerNotRunningError(f"exabgp is not running (restarts: {self.restarts}, last reason: "
                                         f"{self.last_restart_reason})") from exc

    def _targets(self, names: Sequence[str] | None) -> list[NeighborConfig]:
        if names is None:
            return sorted(self.config.neighbors, key=lambda n: n.name)
        unknown = sorted(set(names) - set(self._by_name))
        if unknown or not names:
            raise unknown_route_servers(unknown, self._by_name)
        return [self._by_name[n] for n in sorted(set(names))]

    def preview(self, ann: Announcement) -> Preview:
        """Check ``ann`` with the safety rules and return exactly what :meth:`announce` would send."""
        check_announcement(ann, self._leases, self.safety, self._history, self._clock(),
                           route_servers=list(self._by_name))
        ann = ann.model_copy(update={"prefix": str(parse_prefix(ann.prefix))})
        return render.preview(self.config, ann, self._targets(ann.route_servers))

    async def announce(self, ann: Announcement) -> Preview:
        """Announce (or re-announce with new attributes) to the chosen route servers; return what was sent.

        Refused by the safety rules before anything is sent (:class:`SafetyError`).
        """
        self.preview(ann)  # refuse early, even while exabgp is restarting
        await self._wait_ready()
        async with self._op_lock:
            pv = self.preview(ann)
            ann = ann.model_copy(update={"prefix": pv.prefix})
            for name, command in zip(pv.route_servers, pv.commands, strict=True):
                await self._send(command)
                self._desired.pop((pv.prefix, name), None)  # keep first-announced order fresh
                self._desired[(pv.prefix, name)] = AnnouncedRoute(rs=name, prefix=pv.prefix, command=command,
                                                                  as_path=pv.as_path, announcement=ann)
            self._record_change(pv.prefix)
        self._emit("announce", message=f"announced {pv.prefix} to {', '.join(pv.route_servers)}",
                   data={"prefix": pv.prefix, "route_servers": pv.route_servers, "commands": pv.commands})
        return pv

    async def withdraw(self, prefix: str, rs: Sequence[str] | None = None) -> list[str]:
        """Withdraw ``prefix`` from the given route servers (default: wherever it is announced, else all).

        Withdrawals are never rate limited (they only reduce what is visible). Returns the commands sent.
        A prefix that is not announced (on those route servers) raises :class:`NotAnnouncedError`: nothing is
        sent and no change is recorded.
        """
        if not self._running:
            raise SpeakerNotRunningError("the speaker is not started")
        net = str(parse_prefix(prefix))
        wanted = None if rs is None else {n.name for n in self._targets(rs)}
        announced = sorted(name for (p, name) in self._desired
                           if p == net and (wanted is None or name in wanted))
        if not announced:
            where = sorted(name for (p, name) in self._desired if p == net)
            listed = ", ".join(sorted({p for (p, _) in self._desired})) or "nothing"
            detail = (f"it is announced to {', '.join(where)} only" if where else f"announced: {listed}")
            on = "" if rs is None else f" to {', '.join(sorted(wanted or ()))}"
            raise NotAnnouncedError(f"{net} is not announced{on}; nothing withdrawn ({detail})")
        targets = self._targets(announced)
        await self._wait_ready()
        sent: list[str] = []
        async with self._op_lock:
            for neighbor in targets:
                if (net, neighbor.name) not in self._desired:
                    continue  # withdrawn meanwhile (the lease schedule)
                command = render.withdraw_command(neighbor, net)
                await self._send(command)
                self._desired.pop((net, neighbor.name), None)
                sent.append(command)
            if not sent:
                raise NotAnnouncedError(f"{net} is not announced any more; nothing withdrawn")
            self._record_change(net)
        self._emit("withdraw", message=f"withdrew {net} from {', '.join(t.name for t in targets)}",
                   data={"prefix": net, "route_servers": [t.name for t in targets], "commands": sent})
        return sent

    async def send_unchecked(self, command: str) -> None:
        """UNSAFE: send one raw ExaBGP API command WITHOUT the safety rules, and wait for its ack.

        For tests and lab experiments that must show what the route servers do with an announcement this
        client would refuse. Nothing is recorded (it is not restored after an ExaBGP restart, not withdrawn
        before a lease ends); the CLI and the daemon's control socket never reach it.
        """
        log.warning("sending an UNCHECKED command (safety rules bypassed): %s", command)
        await self._wait_ready()
        async with self._op_lock:
            await self._send(command)

    # --- leases --------------------------------------------------------------------------------------------

    def set_leases(self, leases: Sequence[Lease]) -> None:
        """Replace the user's active leases (from the gateway); the schedule follows at its next check."""
        self._leases = list(leases)

    @property
    def leases(self) -> list[Lease]:
        """The leases the safety rules and the expiry schedule use."""
        return list(self._leases)

    async def check_leases(self) -> None:
        """Warn about, and withdraw, announcements whose lease is ending (also run periodically)."""
        announced = {p for (p, _) in self._desired}
        for action in lease_actions(announced, self._leases, self.safety, self._clock(), self._warned):
            if action.action == "warn":
                self._warned.add(action.key)
                log.warning("%s will be withdrawn at %s: %s", action.prefix, action.at.isoformat(),
                            action.reason)
                self._emit("lease-warning", message=f"{action.prefix} will be withdrawn at "
                           f"{action.at.isoformat()}: {action.reason}",
                           data={"prefix": action.prefix, "withdraw_at": action.at.isoformat()})
                continue
            try:
                await self.withdraw(action.prefix)
            except NotAnnouncedError:
                continue  # withdrawn by the user meanwhile
            except Exception as exc:  # keep the schedule alive; it retries at the next check
                log.error("automatic withdrawal of %s failed: %s", action.prefix, exc)
                self._emit("error", message=f"automatic withdrawal of {action.prefix} failed: {exc}")
                continue
            self._warned = {key for key in self._warned if key[0] != action.prefix}
            self._emit("lease-withdraw", message=f"withdrew {action.prefix}: {action.reason}",
                       data={"prefix": action.prefix})

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_check_interval)
            if self._ready.is_set():
                try:
                    await self.check_leases()
                except Exception:
                    log.exception("lease check failed")

    # --- events --------------------------------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            if line in ACK_LINES:
                self._ack(line == "done")
                continue
            try:
                self._handle(line)
            except Exception:
                log.exception("could not handle exabgp event: %s", line[:200])

    def _ack(self, ok: bool) -> None:
        # Acks come in command order; an ack with nothing pending (none is expected) is skipped. A command
        # that timed out left its cancelled future queued: its late ack is consumed by it here.
        if not self._pending:
            self.stray_acks += 1
            log.debug("ack %s with no command pending; skipped", "done" if ok else "error")
            return
        fut = self._pending.popleft()
        if not fut.done():
            fut.set_result(ok)

    def _handle(self, line: str) -> None:
        event = parse_event(line)
        if event is None:
            return
        name = self._by_peer.get(event.peer)
        if name is None:
            return
        session = self._sessions[name]
        now = self._clock()
        if isinstance(event, FsmEvent):
            if event.state == session.state:
                return
            if event.state is SessionState.ESTABLISHED:
                session.since = now
                # Up again: an error or notification of an earlier session is no longer current.
                session.last_error = None
                session.last_notification = None
            elif session.state is SessionState.ESTABLISHED:
                session.since = None
                session.rib.clear()
            session.state = event.state
            self._emit("session", rs=name, message=f"{name}: {event.state.value}",
                       data={"state": event.state.value})
        elif isinstance(event, StateEvent):
            if event.state == "down":
                session.last_error = event.reason or "session down"
                session.rib.clear()
                self._emit("session", rs=name, message=f"{name}: down ({session.last_error})",
                           data={"state": "down", "reason": session.last_error})
        elif isinstance(event, NotificationEvent):
            text = f"{event.direction} code {event.code} subcode {event.subcode}"
            if event.message:
                text += f": {event.message}"
            session.last_notification = text
            self._emit("notification", rs=name, message=f"{name}: notification {text}",
                       data={"direction": event.direction, "code": event.code, "subcode": event.subcode})
        elif isinstance(event, UpdateEvent):
            self._apply_update(name, session, event)

    def _apply_update(self, name: str, session: _Session, event: UpdateEvent) -> None:
        for prefix in event.withdrawn:
            if session.rib.pop(prefix, None) is not None:
                self._emit("withdrawn", rs=name, message=f"{name} withdrew {prefix}", data={"prefix": prefix})
        attrs = event.attributes
        for prefix, next_hop in event.announced.items():
            route = ReceivedRoute(rs=name, prefix=prefix, next_hop=next_hop, as_path=attrs.as_path,
                                  communities=attrs.communities, large_communities=attrs.large_communities,
                                  med=attrs.med, origin=attrs.origin)
            session.rib[prefix] = route
            self._emit("received", rs=name, message=f"{name} sent {prefix}",
                       data=route.model_dump(mode="json"))

    def subscribe(self, maxsize: int = 1000) -> Subscription:
        """Subscribe to events (session changes, routes, notifications, restarts, lease warnings)."""
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def _emit(self, kind: str, *, rs: str | None = None, message: str = "",
              data: dict[str, object] | None = None) -> None:
        event = SpeakerEvent(kind=kind, time=self._clock(), rs=rs, message=message, data=data or {})
        for sub in list(self._subscribers):
            sub._put(event)

    # --- snapshots -----------------------------------------------------------------------------------------

    def sessions(self) -> list[SessionStatus]:
        """Current state of every route server session."""
        now = self._clock()
        return [
            SessionStatus(rs=name, neighbor=s.neighbor.address, peer_asn=s.neighbor.asn, state=s.state,
                          established_since=s.since,
                          uptime_seconds=(now - s.since).total_seconds() if s.since else None,
                          last_error=s.last_error, last_notification=s.last_notification,
                          received_routes=len(s.rib))
            for name, s in sorted(self._sessions.items())
        ]

    def received(self, rs: str | None = None) -> list[ReceivedRoute]:
        """The Adj-RIB-In (of one route server, or all)."""
        if rs is not None and rs not in self._sessions:
            raise UnknownRouteServerError(f"no route server called {rs!r}; "
                                          f"known: {', '.join(sorted(self._sessions))}")
        names = [rs] if rs is not None else sorted(self._sessions)
        return [route for n in names for _, route in sorted(self._sessions[n].rib.items())]

    def announced(self) -> list[AnnouncedRoute]:
        """What is announced (and restored after a restart), per route server, with when the lease schedule
        withdraws it and whether its warning was given."""
        now = self._clock()
        rows = []
        for route in sorted(self._desired.values(), key=lambda r: (r.prefix, r.rs)):
            at = withdraw_time(route.prefix, self._leases, self.safety, now)
            end = None if at is None else at + timedelta(seconds=self.safety.withdraw_margin)
            warned = (route.prefix, end) in self._warned
            rows.append(route.model_copy(update={"withdraw_at": at, "warned": warned}))
        return rows

    def status(self) -> SpeakerStatus:
        """A snapshot: process, restarts, sessions and announcements."""
        return SpeakerStatus(running=self._ready.is_set(), pid=self.pid, asn=self.config.asn,
                             router_id=self.config.router_id, restarts=self.restarts,
                             last_restart_reason=self.last_restart_reason,
                             last_restart_at=self.last_restart_at,
                             sessions=self.sessions(), announced=self.announced())
