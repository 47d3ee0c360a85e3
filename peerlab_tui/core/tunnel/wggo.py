"""WireGuard in userspace: ``wireguard-go -f IFNAME`` (inside the namespace) driven through its UAPI socket.

wireguard-go creates its TUN device in the namespace it runs in, but its UAPI socket lives at the global
``/var/run/wireguard/IFNAME.sock``, so interface names must be unique on the whole machine. The process is
started in its own session so it outlives the command that started it (``tunnel up`` exits, the tunnel
stays); deleting the interface makes it exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from peerlab_tui.core import netns as nsmod
from peerlab_tui.core.tunnel.device import DeviceStatus, PeerConfig, check_ifname, check_netns
from peerlab_tui.core.tunnel.errors import BackendUnavailableError, TunnelError, UapiError
from peerlab_tui.core.tunnel.uapi import UapiClient

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_wireguard_go_for(pid: int, ifname: str) -> bool:
    """True when ``pid`` is a live (not zombie) ``wireguard-go`` process serving ``ifname``."""
    argv = _cmdline(pid)
    return bool(argv) and any(Path(a).name == "wireguard-go" for a in argv) and argv[-1] == ifname


def find_wireguard_go_pid(ifname: str) -> int | None:
    """The PID of the wireguard-go process serving ``ifname``, found through /proc."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_wireguard_go_for(int(entry.name), ifname):
            return int(entry.name)
    return None


def wireguard_go_binary() -> str:
    """Path of ``wireguard-go`` (env ``PEERLAB_WIREGUARD_GO`` overrides); :class:`BackendUnavailableError`
    when missing."""
    override = os.environ.get("PEERLAB_WIREGUARD_GO")
    path = override if override and os.access(override, os.X_OK) else shutil.which("wireguard-go")
    if path is None:
        raise BackendUnavailableError(
            "wireguard-go is not installed and the kernel has no WireGuard module "
            "(install the wireguard-go package, e.g. apt-get install wireguard-go)"
        )
    return path


# What a daemon we start may inherit from our environment: nothing secret (PEERLAB_TOKEN, the gateway URL
# with credentials, cloud keys ...). /proc/PID/environ outlives the command that started the daemon.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
# The lab's marker (``lab down`` recognises the daemons it started by it); not a secret.
LAB_MARKER_ENV = "PEERLAB_LAB"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def daemon_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for wireguard-go: PATH and locale, the lab marker, its own ``WG_*`` settings
    (``WG_TUN_FD``, ``WG_UAPI_FD``, ``WG_PROCESS_FOREGROUND`` ...), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k in INHERITED_ENV or k == LAB_MARKER_ENV or k.startswith("WG_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra or {})
    return env


def _wait_gone(pid: int, ifname: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_wireguard_go_for(pid, ifname):
            return True
        time.sleep(0.05)
    return not is_wireguard_go_for(pid, ifname)


class WireGuardGo:
    """A wireguard-go interface. ``WireGuardGo(ifname, netns)`` attaches; :meth:`create` starts one."""

    backend_name: ClassVar[str] = "wireguard-go"

    def __init__(self, ifname: str, netns: str | None = None, *,
                 process: subprocess.Popen[bytes] | None = None, pid: int | None = None) -> None:
        check_ifname(ifname)
        self.ifname = ifname
        self.netns = netns
        self.process = process
        self.pid = pid if pid is not None else (process.pid if process is not None else None)
        self.uapi = UapiClient(ifname)

    def __repr__(self) -> str:
        return f"WireGuardGo({self.ifname!r}, netns={self.netns!r}, pid={self.pid})"

    @classmethod
    def create(cls, ifname: str, netns: str | None = None, *, log_path: Path | None = None,
               timeout: float = START_TIMEOUT) -> WireGuardGo:
        """Start ``wireguard-go`` for ``ifname`` in ``netns`` and bring the interface up (idempotent).

        Its output goes to ``log_path`` (default: a file in the temp directory), which is quoted when the
        daemon fails to start. The process runs in its own session: it keeps running after we exit.
        """
        check_ifname(ifname)
        check_netns(netns)
        existing = cls(ifname, netns)
        if existing.uapi.reachable():
            if nsmod.link_exists(ifname, netns=netns):
                existing.pid = find_wireguard_go_pid(ifname)
                nsmod.run(["ip", "link", "set", ifname, "up"], netns=netns)
                return existing
            raise TunnelError(
                f"a WireGuard interface named {ifname!r} already runs in another namespace "
                f"({existing.uapi.path} is in use); interface names must be unique on the machine"
            )
        if nsmod.link_exists(ifname, netns=netns):
            raise TunnelError(
                f"an interface named {ifname!r} already exists and is not a wireguard-go device"
            )
        binary = wireguard_go_binary()
        if log_path is None:
            log_path = Path(tempfile.gettempdir()) / f"peerlab-wireguard-go-{ifname}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Foreground mode keeps the PID we get the daemon's own; the variable also silences its banner.
        env = daemon_environment({"WG_PROCESS_FOREGROUND": "1"})
        argv = [*nsmod.netns_prefix(netns), binary, "-f", ifname]
        try:
            # O_NOFOLLOW: the default log lives in a shared temp directory.
            logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise TunnelError(f"cannot open the wireguard-go log {log_path}: {exc.strerror}") from exc
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfd, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except OSError as exc:
            raise TunnelError(f"cannot start {' '.join(argv)}: {exc}") from exc
        finally:
            os.close(logfd)
        dev = cls(ifname, netns, process=proc)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise TunnelError(
                    f"wireguard-go for {ifname!r} exited with status {proc.returncode}: {_tail(log_path)}"
                )
            if dev.uapi.reachable() and nsmod.link_exists(ifname, netns=netns):
                break
            if time.monotonic() > deadline:
                _stop(proc)
                raise TunnelError(f"wireguard-go for {ifname!r} did not come up within {timeout:g} s: "
                                  f"{_tail(log_path)}")
            time.sleep(0.05)
        nsmod.run(["ip", "link", "set", ifname, "up"], netns=netns)
        log.info("started wireguard-go for %s (netns %s, pid %d)", ifname, netns or "-", proc.pid)
        return dev

    def exists(self) -> bool:
        """True when wireguard-go answers on the interface's UAPI socket."""
        return self.uapi.reachable()

    def configure(self, private_key: str, listen_port: int | None, peers: Sequence[PeerConfig],
                  *, replace: bool = True) -> None:
        """Set key, port and peers in one UAPI transaction."""
        self.uapi.set(private_key=private_key, listen_port=listen_port, replace_peers=replace, peers=peers)

    def set_peers(self, peers: Sequence[PeerConfig]) -> None:
        """Add or update peers (their allowed IPs are replaced); others untouched."""
        if peers:
            self.uapi.set(peers=peers)

    def remove_peer(self, public_key: str) -> None:
        """Remove one peer; absent peers are ignored."""
        if self.status().peer(public_key) is not None:
            self.uapi.set(remove=[public_key])

    def remove_peers(self, public_keys: Sequence[str]) -> None:
        """Remove several peers in one UAPI transaction."""
        if public_keys:
            self.uapi.set(remove=public_keys)

    def status(self) -> DeviceStatus:
        """Settings, peers, handshakes and counters via ``get=1``."""
        return self.uapi.get()

    def delete(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Delete the interface; wireguard-go then exits (it is signalled if it does not)."""
        pid = self.pid
        if pid is None or not is_wireguard_go_for(pid, self.ifname):
            pid = find_wireguard_go_pid(self.ifname)
        if self.netns is None or nsmod.netns_exists(self.netns):
            nsmod.delete_link(self.ifname, netns=self.netns)
        if self.process is not None:
            _stop(self.process, timeout=timeout)
        elif pid is not None and not _wait_gone(pid, self.ifname, timeout):
            # Checked again right before each signal: a recycled PID is never signalled.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if is_wireguard_go_for(pid, self.ifname):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                if _wait_gone(pid, self.ifname, timeout):
                    break
        self.process = None
        self.pid = None
        log.info("deleted wireguard-go interface %s", self.ifname)


def _stop(proc: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT) -> None:
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _tail(path: Path, limit: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-limit:] if text else "(no output)"


__all__ = ["UapiError", "WireGuardGo", "daemon_environment", "find_wireguard_go_pid", "is_wireguard_go_for",
           "wireguard_go_binary"]
