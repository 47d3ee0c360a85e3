"""Detached daemons of the lab: start, recognise, stop.

Every daemon the lab starts runs in its own session (it outlives ``lab up``), writes to a log file in the
state directory and carries ``PEERLAB_LAB=<prefix>`` in its environment. ``lab down`` signals a process
only when that marker is in its environment, so it never kills a process the lab did not start, even with
``state.json`` lost and PIDs reused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from peerlab_tui.core.errors import ExternalProgramError
from peerlab_tui.core.netns import NETNS_DIR, netns_prefix

log = logging.getLogger(__name__)

MARKER = "PEERLAB_LAB"
PROC = Path("/proc")


# Inherited by every daemon the lab starts: what Python and BIRD need to run, nothing secret. The
# caller's PEERLAB_TOKEN, PEERLAB_GW_* (the lab gateway has its own config file) and anything else stay out
# of /proc/PID/environ of processes that outlive ``lab up``; a daemon that needs a secret (the rs-agent's
# service token) gets it explicitly through ``env``.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                 "PEERLAB_WIREGUARD_GO")


def daemon_base_environment() -> dict[str, str]:
    """The environment every lab daemon starts from (see :data:`INHERITED_ENV`)."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def spawn(argv: Sequence[str], *, prefix: str, log_path: Path, netns: str | None = None,
          env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, output to ``log_path``) inside ``netns``; return its PID.

    ``ip netns exec`` execs the daemon in place, so the PID is the daemon's own.
    """
    full_env = {**daemon_base_environment(), **(env or {}), MARKER: prefix}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(
                [*netns_prefix(netns), *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=full_env, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise ExternalProgramError(f"cannot start {argv[0]}: {exc}") from exc
    log.info("started %s (pid %d, netns %s)", " ".join(argv), proc.pid, netns or "host")
    # The handle is dropped on purpose: the daemon must outlive this command. Python does not reap it;
    # the init process does once we exit.
    proc.returncode = 0  # silence the "still running" ResourceWarning of Popen.__del__
    return proc.pid


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    stat = _read(PROC / str(pid) / "stat")
    if stat is None:
        return False
    # "pid (comm) S ...": the state follows the last ')'.
    state = stat.rsplit(b")", 1)[-1].split()[0]
    return state not in (b"Z", b"X")


def cmdline(pid: int) -> list[str] | None:
    """The command line of a process (None when gone)."""
    raw = _read(PROC / str(pid) / "cmdline")
    if raw is None:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def has_marker(pid: int, prefix: str) -> bool:
    """True when the process carries this lab's marker in its environment."""
    env = _read(PROC / str(pid) / "environ")
    if env is None:
        return False
    return f"{MARKER}={prefix}".encode() in env.split(b"\0")


def in_netns(pid: int, netns: str | None) -> bool:
    """True when ``pid`` runs in the named namespace (None: the host's, i.e. ours).

    A namespace deleted and created again under the same name is another namespace: a daemon still in the
    old one no longer serves the lab.
    """
    try:
        have = os.stat(PROC / str(pid) / "ns" / "net")
        want = os.stat(NETNS_DIR / netns) if netns else os.stat(PROC / "self" / "ns" / "net")
    except OSError:
        return False
    return (have.st_dev, have.st_ino) == (want.st_dev, want.st_ino)


def matches(pid: int, argv: Sequence[str], prefix: str, netns: str | None = None) -> bool:
    """True when ``pid`` is alive, is ours (marker), runs ``argv`` and lives in ``netns``."""
    if not is_running(pid) or not has_marker(pid, prefix) or not in_netns(pid, netns):
        return False
    cmd = cmdline(pid)
    return cmd is not None and (cmd == list(argv) or cmd[-len(argv):] == list(argv))


def marked_pids(prefix: str) -> list[int]:
    """Every live process carrying this lab's marker."""
    me = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != me and has_marker(int(entry.name), prefix) \
                and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def terminate(pids: Iterable[int], prefix: str, *, timeout: float = 5.0) -> list[int]:
    """SIGTERM this lab's processes among ``pids``, SIGKILL those still alive after ``timeout``.

    A PID without the lab's marker is never signalled. Returns the PIDs signalled.
    """
    targets = [p for p in set(pids) if has_marker(p, prefix)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_running(p) for p in targets):
        time.sleep(0.05)
    for pid in targets:
        if is_running(pid) and has_marker(pid, prefix):
            log.warning("pid %d ignored SIGTERM; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_running(p) for p in targets):
        time.sleep(0.05)
    return targets
