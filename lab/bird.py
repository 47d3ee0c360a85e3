"""BIRD 2: run the daemon and talk to it over its control socket (no ``birdc`` needed).

Used by the route-server agent (``lab.rsagent``), the lab topology and the tests.

The control protocol is line based: every reply line starts with a 4-digit code followed by ``-`` (more lines
follow) or a space (last line of the reply); a line starting with a space continues the previous code. Codes
0xxx end a command successfully, 1xxx/2xxx carry data, 8xxx (runtime) and 9xxx (parse) are errors. Lines
starting with ``+`` are asynchronous notices and are skipped.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from peerlab_tui.core.errors import ExitCode, ExternalProgramError
from peerlab_tui.core.netns import netns_prefix

log = logging.getLogger(__name__)

BIRD_BINARY = "bird"


class BirdError(ExternalProgramError):
    """BIRD refused a command or failed."""

    def __init__(self, message: str, *, code: int | None = None, reply: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply  # BIRD's own text of the error reply


class BirdConfigError(BirdError):
    """BIRD rejected a configuration (validation with ``bird -p`` or ``configure``)."""


class BirdSocketError(BirdError):
    """The control socket could not be reached or the connection broke."""

    exit_code = ExitCode.UNREACHABLE


# --- process ----------------------------------------------------------------------------------------------


def validate_config(path: Path | str, *, bird_binary: str = BIRD_BINARY, timeout: float = 60.0) -> None:
    """Parse a configuration with ``bird -p -c FILE``; raise :class:`BirdConfigError` with BIRD's message."""
    try:
        proc = subprocess.run([bird_binary, "-p", "-c", str(path)], capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError as exc:
        raise BirdError(f"{bird_binary} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise BirdError(f"bird -p -c {path} timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")
        raise BirdConfigError(message.removeprefix("bird: "))


class BirdProcess:
    """One ``bird -f -c CONF -s SOCK`` daemon (optionally inside a network namespace), with its Popen handle.

    Its stdout/stderr go to ``log_path`` when given (render ``log stderr all;`` to see filter messages there).
    """

    def __init__(self, config: Path | str, socket_path: Path | str, *, netns: str | None = None,
                 log_path: Path | str | None = None, bird_binary: str = BIRD_BINARY) -> None:
        self.config = Path(config)
        self.socket_path = Path(socket_path)
        self.netns = netns
        self.log_path = Path(log_path) if log_path else None
        self.bird_binary = bird_binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The daemon's process id (``ip netns exec`` execs BIRD, so it is BIRD's own pid)."""
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        """True while the daemon process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = 15.0) -> BirdProcess:
        """Start the daemon and wait until its control socket answers; raise :class:`BirdError` otherwise."""
        if self.running():
            return self
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = [*netns_prefix(self.netns), self.bird_binary, "-f", "-c", str(self.config),
                "-s", str(self.socket_path)]
        if self.log_path:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        out = self._log_file if self._log_file else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except FileNotFoundError as exc:
            raise BirdError(f"cannot start {argv[0]}: {exc}") from exc
        try:
            self.wait_ready(timeout=timeout)
        except BirdError:
            self.stop()
            raise
        log.info("bird started (pid %s, socket %s, netns %s)", self.pid, self.socket_path, self.netns)
        return self

    def wait_ready(self, *, timeout: float = 15.0) -> None:
        """Wait until the control socket greets us; raise if the daemon exits or the timeout passes."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BirdError(f"bird exited with code {self.proc.returncode} during start: "
                                f"{self._log_tail()}")
            try:
                with BirdControl(self.socket_path, timeout=2.0) as ctl:
                    ctl.connect()
                return
            except BirdSocketError as exc:
                last = exc
                time.sleep(0.05)
        raise BirdError(f"bird control socket {self.socket_path} not ready after {timeout:g} s ({last})")

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-2000:].strip()
        return ""

    def stop(self, *, timeout: float = 10.0) -> None:
        """Terminate the daemon (SIGTERM, then SIGKILL after ``timeout``) and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def control(self, *, timeout: float = 60.0) -> BirdControl:
        """A control-socket client for this daemon."""
        return BirdControl(self.socket_path, timeout=timeout)

    def __enter__(self) -> BirdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- control socket ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyLine:
    """One line of a reply: its code (continuation lines inherit the previous one) and text."""

    code: int
    text: str


@dataclass(frozen=True)
class ProtocolStatus:
    """One row of ``show protocols``."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


@dataclass
class Route:
    """One route of ``show route all`` (a table, an import table, or filtered)."""

    prefix: str
    table: str
    protocol: str
    since: str = ""
    best: bool = False
    preference: int | None = None
    route_type: str = ""
    next_hop: str | None = None
    interface: str | None = None
    as_path: list[int] = field(default_factory=list)
    # Segments as (is_set, asns) so filter semantics (length, first, last) can be reproduced exactly.
    as_path_segments: list[tuple[bool, list[int]]] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    large_communities: list[str] = field(default_factory=list)
    med: int | None = None
    local_pref: int | None = None
    origin: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


_PROTO_RE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\d \S+|\S+)\s*(.*)$")
_ROUTE_SRC_RE = re.compile(r"\[(\S+?)(?:\s+([^\]]*))?\]\s*(\*)?\s*(?:\((\d+)(?:/[^)]*)?\))?")
_PAIR_RE = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE_RE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


def parse_as_path(text: str) -> list[tuple[bool, list[int]]]:
    """Parse BIRD's AS path text (``65001 65002 {65003 65004}``) into (is_set, asns) segments."""
    segments: list[tuple[bool, list[int]]] = []
    for token in re.findall(r"\{[^}]*\}|\d+", text):
        if token.startswith("{"):
            segments.append((True, [int(x) for x in re.findall(r"\d+", token)]))
        elif token.isdigit():
            if segments and not segments[-1][0]:
                segments[-1][1].append(int(token))
            else:
                segments.append((False, [int(token)]))
    return segments


def parse_routes(lines: Sequence[ReplyLine]) -> list[Route]:
    """Parse the data lines of ``show route all ...`` into :class:`Route` objects."""
    routes: list[Route] = []
    table = ""
    prefix = ""
    current: Route | None = None
    last_attr: str | None = None
    for line in lines:
        text = line.text
        if line.code == 1007 and text.startswith("Table ") and text.endswith(":"):
            table = text[len("Table "):-1]
            continue
        if not text.strip():
            continue
        if text.startswith("\t\t") and current is not None and last_attr:
            # A long attribute (many communities) wraps onto continuation lines.
            current.attributes[last_attr] += " " + text.strip()
            _apply_attribute(current, last_attr, current.attributes[last_attr])
            continue
        if text.startswith("\t"):
            if current is None:
                continue
            body = text.strip()
            if body.startswith("via "):
                parts = body.split()
                current.next_hop = parts[1]
                if "on" in parts:
                    current.interface = parts[parts.index("on") + 1]
            elif body.startswith("dev "):
                current.interface = body.split()[1]
            elif body.startswith("Type: "):
                current.attributes["Type"] = body[len("Type: "):]
            elif ": " in body or body.endswith(":"):
                key, _, value = body.partition(":")
                last_attr = key.strip()
                current.attributes[last_attr] = value.strip()
                _apply_attribute(current, last_attr, value.strip())
            continue
        # A route line: "<net> <type> [proto since] * (pref) [AS...]", or without net for a further route.
        if not text[0].isspace():
            prefix, _, rest = text.partition(" ")
        else:
            rest = text
        m = _ROUTE_SRC_RE.search(rest)
        if not m or not prefix:
            continue
        current = Route(prefix=prefix, table=table, protocol=m.group(1), since=(m.group(2) or "").strip(),
                        best=bool(m.group(3)), preference=int(m.group(4)) if m.group(4) else None,
                        route_type=rest[: m.start()].strip())
        last_attr = None
        routes.append(current)
    return routes


def _apply_attribute(route: Route, key: str, value: str) -> None:
    if key == "BGP.as_path":
        route.as_path_segments = parse_as_path(value)
        route.as_path = [asn for _, asns in route.as_path_segments for asn in asns]
    elif key == "BGP.community":
        route.communities = [f"{a}:{b}" for a, b in _PAIR_RE.findall(value)]
    elif key == "BGP.large_community":
        route.large_communities = [f"{a}:{b}:{c}" for a, b, c in _TRIPLE_RE.findall(value)]
    elif key == "BGP.med":
        route.med = int(value.split()[0])
    elif key == "BGP.local_pref":
        route.local_pref = int(value.split()[0])
    elif key == "BGP.origin":
        route.origin = value


# Final reply codes of ``configure`` that mean BIRD took the configuration (nest/cli reply codes):
# 0003 Reconfigured, 0004 Reconfiguration in progress, 0005 Reconfiguration already in progress, queueing new
# config, 0018 Reconfiguration confirmed. Not success: 0006 Reconfiguration ignored, shutting down; 0017
# (queued config removed); 8xxx/9xxx errors.
CONFIGURE_OK_CODES = frozenset({3, 4, 5, 18})
CHECK_OK_CODES = frozenset({20})  # 0020 Configuration OK


class BirdControl:
    """A client of BIRD's control socket. One connection, reopened on demand; not thread safe."""

    def __init__(self, socket_path: Path | str, *, timeout: float = 60.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: IO[bytes] | None = None
        self.version: str | None = None

    def connect(self) -> None:
        """Open the connection and read BIRD's greeting (``0001 BIRD x.y.z ready.``)."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
            self._sock, self._file = sock, sock.makefile("rb")
            greeting = self._read_reply()
        except OSError as exc:
            sock.close()
            self._sock = self._file = None
            raise BirdSocketError(f"cannot reach BIRD at {self.socket_path}: {exc}") from exc
        if not greeting or greeting[0].code != 1:
            self.close()
            raise BirdSocketError(f"unexpected greeting from {self.socket_path}: {greeting}")
        self.version = greeting[0].text

    def close(self) -> None:
        """Close the connection."""
        if self._file:
            self._file.close()
        if self._sock:
            self._sock.close()
        self._sock = self._file = None

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_reply(self) -> list[ReplyLine]:
        assert self._file is not None
        lines: list[ReplyLine] = []
        code = 0
        while True:
            raw = self._file.readline()
            if not raw:
                raise BirdSocketError("BIRD closed the control connection")
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            if text.startswith("+"):
                continue  # asynchronous notice
            if text.startswith(" "):
                lines.append(ReplyLine(code, text[1:]))
                continue
            if len(text) >= 5 and text[:4].isdigit() and text[4] in " -":
                code = int(text[:4])
                lines.append(ReplyLine(code, text[5:]))
                if text[4] == " ":
                    return lines
                continue
            lines.append(ReplyLine(code, text))  # not protocol conformant; keep it as data

    def command(self, cmd: str) -> list[ReplyLine]:
        """Send one command and return its reply lines; raise :class:`BirdError` on an 8xxx/9xxx reply."""
        if "\n" in cmd:
            raise ValueError("a BIRD command is one line")
        for attempt in (1, 2):
            self.connect()
            assert self._sock is not None
            try:
                self._sock.sendall(cmd.encode() + b"\n")
                reply = self._read_reply()
                break
            except (OSError, BirdSocketError) as exc:
                self.close()
                if attempt == 2:
                    raise BirdSocketError(f"BIRD control connection failed during {cmd!r}: {exc}") from exc
        final = reply[-1]
        if final.code >= 8000:
            raise BirdError(f"BIRD refused {cmd!r}: {final.text}", code=final.code, reply=final.text)
        return reply

    def iter_data(self, cmd: str) -> Iterator[ReplyLine]:
        """The data lines (codes 1xxx) of a command's reply."""
        return (line for line in self.command(cmd) if 1000 <= line.code < 2000)

    # --- typed commands -----------------------------------------------------------------------------------

    def show_protocols(self, name: str | None = None) -> list[ProtocolStatus]:
        """``show protocols [name]``: name, protocol, table, state, since and info of each protocol."""
        cmd = "show protocols" + (f" {name}" if name else "")
        out: list[ProtocolStatus] = []
        for line in self.iter_data(cmd):
            m = _PROTO_RE.match(line.text.rstrip())
            if m:
                out.append(ProtocolStatus(*(g.strip() for g in m.groups())))
        return out

    def protocol_fingerprints(self, pattern: str) -> dict[str, str]:
        """A cheap change detector: per protocol matching ``pattern`` (BIRD's ``"u*"`` syntax), its summary
        row plus its route counters (``Routes:``, ``Import updates/withdraws``) from ``show protocols all``.

        Every UPDATE a session receives bumps its import counters and every re-establishment changes its
        summary row, so an unchanged fingerprint means the session's received routes did not change.
        """
        try:
            lines = list(self.iter_data(f'show protocols all "{pattern}"'))
        except BirdError as exc:
            if exc.code == 8003:  # "No protocols match"
                return {}
            raise
        out: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in lines:
            if line.code == 1002:
                name = line.text.split(None, 1)[0] if line.text.strip() else ""
                current = out.setdefault(name, [])
                current.append(line.text.rstrip())
            elif current is not None and line.code == 1006:
                for text in line.text.splitlines():
                    stripped = text.strip()
                    if stripped.startswith(("Routes:", "Import updates:", "Import withdraws:", "BGP state:")):
                        current.append(stripped)
        return {name: "\n".join(parts) for name, parts in out.items()}

    def configure(self, *, check_only: bool = False, path: Path | str | None = None, timeout: float = 120.0
                  ) -> str:
        """``configure [check] ["file"]``: reload (or only check) the configuration.

        Returns BIRD's final message when it took the configuration (``0003 Reconfigured``, ``0004
        Reconfiguration in progress``, ``0005`` queued behind one in progress, ``0018 Reconfiguration
        confirmed``; for ``check`` ``0020 Configuration OK``). Anything else raises
        :class:`BirdConfigError` with BIRD's message: an 8xxx/9xxx error (parse error ...), ``0006
        Reconfiguration ignored, shutting down``, or a reply we do not know (never taken for success).
        """
        cmd = "configure check" if check_only else "configure"
        if path is not None:
            cmd += f' "{path}"'
        try:
            reply = self.command(cmd)
        except BirdSocketError:
            raise
        except BirdError as exc:
            raise BirdConfigError(exc.reply or str(exc), code=exc.code, reply=exc.reply) from exc
        final = reply[-1]
        # Any line with an error code (BIRD may report a parse error before its final line) is a refusal.
        errors = [line for line in reply if line.code >= 8000]
        if errors:
            raise BirdConfigError(errors[0].text, code=errors[0].code, reply=errors[0].text)
        ok = CHECK_OK_CODES if check_only else CONFIGURE_OK_CODES
        if final.code not in ok:
            raise BirdConfigError(f"BIRD did not apply the configuration: {final.code:04d} {final.text}",
                                  code=final.code, reply=final.text)
        return final.text

    def reload_in(self, protocol: str = "all") -> str:
        """``reload in PROTOCOL``: re-run the import filter (from the import table, or by route refresh)."""
        reply = self.command(f"reload in {protocol}")
        return " ".join(line.text for line in reply if line.text).strip()

    def show_route(self, *, table: str | None = None, import_table: str | None = None,
                   protocol: str | None = None, prefix: str | None = None, filtered: bool = False,
                   primary: bool = False) -> list[Route]:
        """``show route all`` with options, parsed.

        ``import_table`` is ``"proto.channel"`` (the routes as received, before the import filter, on a
        channel with ``import table on``); ``filtered`` needs ``import keep filtered on``.
        """
        parts = ["show route"]
        if prefix:
            parts.append(f"for {prefix}")
        if table:
            parts.append(f"table {table}")
        if import_table:
            parts.append(f"import table {import_table}")
        if protocol:
            parts.append(f"protocol {protocol}")
        if filtered:
            parts.append("filtered")
        if primary:
            parts.append("primary")
        parts.append("all")
        return parse_routes(list(self.iter_data(" ".join(parts))))

    def show_status(self) -> list[str]:
        """``show status`` lines."""
        return [line.text for line in self.command("show status") if line.text]
