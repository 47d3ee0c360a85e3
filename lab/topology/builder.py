"""Build, check and remove the one-machine IXP (``peerlab-tui lab up/status/down/user add``).

Layout (all names carry the topology's prefix, see ``default.yaml``)::

    <p>-ixp namespace: bridge <p>-br with one port <p>-p<key> per member, each a veth to the member's <p>-ul
      host          ::1     reaches every member (users without --netns; the rs-agents talk to BIRD sockets)
      <p>-upstream  ::2     BIRD "the Internet", BGP to every route server
      <p>-rs1       ::11    BIRD route server + WireGuard <p>-rs1 (overlay); its rs-agent runs in the host ns
      <p>-rs2       ::12    BIRD route server + WireGuard <p>-rs2
      <p>-<user>    ::1001+ ``lab user add NAME --netns``

The bridge lives in its own namespace so the host gains a single veth; deleting the lab's namespaces
removes every veth with them. Every step checks what exists first, so ``lab up`` is idempotent and
repairs a half-built or crashed lab (dead daemons are restarted, nothing alive is touched).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import httpx
import yaml

from lab.bird import BirdControl, BirdError
from lab.topology import procs
from lab.topology.models import (
    RESERVED_SUFFIXES,
    LabState,
    Plan,
    ProcessRecord,
    RouteServerSpec,
    Topology,
    UserRecord,
    read_state,
    write_private,
    write_state,
)
from peerlab_tui.core import netns as ns
from peerlab_tui.core.errors import ConfigError, ExternalProgramError, InputError, PeerlabError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MARKER_FILE = ".peerlab-lab"
SERVICE_SCOPES = ("mappings:read", "routes:write", "tunnels:read")
START_TIMEOUT = 20.0  # seconds a daemon may take to become ready


class LabError(PeerlabError):
    """The lab could not be built or is not in the state the command needs."""


def default_state_dir() -> Path:
    """``$PEERLAB_STATE_DIR/lab``, else ``$XDG_STATE_HOME/peerlab/lab`` (``~/.local/state/peerlab/lab``)."""
    if os.environ.get("PEERLAB_STATE_DIR"):
        return Path(os.environ["PEERLAB_STATE_DIR"]) / "lab"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "peerlab" / "lab"


def available(module: str) -> bool:
    """True when a (possibly not yet written) part of the platform is installed."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def python_cli(*args: str) -> list[str]:
    """The argv that runs ``peerlab-tui ARGS`` with this interpreter."""
    return [sys.executable, "-m", "peerlab_tui", *args]


def free_port() -> int:
    """A currently free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str,
             alive: Callable[[], bool] | None = None, log_path: Path | None = None) -> None:
    """Poll ``check`` until true; fail early when ``alive`` says the daemon died (with its log's tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise ExternalProgramError(f"{what} exited during start-up{_log_tail(log_path)}")
        time.sleep(0.03)
    raise ExternalProgramError(f"{what} not ready after {timeout:g} s{_log_tail(log_path)}")


def _log_tail(path: Path | None, lines: int = 8) -> str:
    if path is None:
        return ""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f" (log {path}):\n  " + "\n  ".join(tail) if tail else f" (log {path} is empty)"


def bird_up(sock: Path) -> bool:
    """True when BIRD answers ``show status`` on its control socket."""
    if not sock.exists():
        return False
    try:
        with BirdControl(sock, timeout=3.0) as ctl:
            return any("Daemon is up and running" in line for line in ctl.show_status())
    except BirdError:
        return False


def bgp_established(sock: Path) -> dict[str, bool]:
    """BGP protocol name -> Established, from ``show protocols`` (empty when BIRD does not answer)."""
    if not sock.exists():
        return {}
    try:
        with BirdControl(sock, timeout=3.0) as ctl:
            return {p.name: "Established" in p.info for p in ctl.show_protocols() if p.proto == "BGP"}
    except BirdError:
        return {}


def bird_configure(sock: Path) -> None:
    """Make a running BIRD reload its configuration file."""
    with BirdControl(sock, timeout=30.0) as ctl:
        ctl.configure()


class Lab:
    """One lab: a topology plus a state directory."""

    def __init__(self, topo: Topology, state_dir: Path) -> None:
        self.topo = topo
        self.plan = Plan(topo)
        self.dir = state_dir.absolute()
        self.state_file = self.dir / "state.json"
        self.logs = self.dir / "logs"
        self.db_path = self.dir / "gateway.sqlite"
        self.db_url = f"sqlite:///{self.db_path}"
        self.gateway_config = self.dir / "gateway.yaml"
        self.admin_token_file = self.dir / "admin.token"
        self.service_token_file = self.dir / "service.token"
        self.upstream_dir = self.dir / "upstream"
        self._stale_agents: set[str] = set()  # route servers whose rs.yaml changed under a running agent
        # TCP MD5 secret of the route server <-> upstream sessions (0600), made by the first `lab up`.
        self.bgp_secret_file = self.dir / "keys" / "upstream-bgp.secret"

    # --- paths ------------------------------------------------------------------------------------------
    def rs_dir(self, rs: str) -> Path:
        """The agent's ``--config-dir`` of a route server (rs.yaml, bird.conf, control socket)."""
        return self.dir / "rs" / rs

    def rs_socket(self, rs: str) -> Path:
        """A route server's BIRD control socket."""
        return self.rs_dir(rs) / "bird.ctl"

    def rs_key_file(self, rs: str) -> Path:
        """A route server's WireGuard private key (0600)."""
        return self.dir / "keys" / f"{rs}.key"

    def user_token_file(self, user: str) -> Path:
        """Where ``lab user add`` saves a user's token (0600)."""
        return self.dir / "users" / f"{user}.token"

    def lab_netns(self) -> list[str]:
        """The namespaces of the lab itself (users' not included)."""
        plan = self.plan
        rs_spaces = [plan.rs_netns(r.name) for r in self.topo.route_servers]
        return [plan.ixp_netns, plan.upstream_netns, *rs_spaces]

    # --- state ------------------------------------------------------------------------------------------
    def load_state(self) -> LabState | None:
        """The recorded state, checked to belong to this topology's prefix."""
        state = read_state(self.state_file)
        if state is not None and state.prefix != self.plan.prefix:
            raise ConfigError(
                f"{self.dir} holds the lab {state.prefix!r}, not {self.plan.prefix!r}: "
                "use another --state-dir"
            )
        return state

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        marker = self.dir / MARKER_FILE
        if not marker.exists():
            if any(p.name != MARKER_FILE for p in self.dir.iterdir()) and not self.state_file.exists():
                raise ConfigError(f"{self.dir} is not empty and is not a lab state directory")
            marker.write_text(f"{self.plan.prefix}\n")
        elif marker.read_text().strip() != self.plan.prefix:
            raise ConfigError(f"{self.dir} belongs to the lab {marker.read_text().strip()!r}")
        for sub in ("logs", "keys", "users", "upstream", "rs"):
            (self.dir / sub).mkdir(exist_ok=True, mode=0o700)
        for rs in self.topo.route_servers:
            self.rs_dir(rs.name).mkdir(exist_ok=True, mode=0o700)
        longest = max((self.rs_socket(rs.name) for rs in self.topo.route_servers), key=lambda p: len(str(p)))
        if len(str(longest)) > 100:
            raise ConfigError(f"state directory {self.dir} is too long for unix sockets (use a shorter path)")

    # --- up ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise lab commands on one state directory (two ``lab up`` at once would race)."""
        if not self.dir.is_dir():
            yield
            return
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def up(self) -> dict[str, Any]:
        """Build (or repair) the lab and return its summary."""
        self._prepare_dir()
        with self._lock():
            return self._up()

    def _up(self) -> dict[str, Any]:
        state = self.load_state()
        if state is None:
            # No record of a previous run: daemons it left (found by marker) would clash with new ones.
            procs.terminate(procs.marked_pids(self.plan.prefix), self.plan.prefix)
            state = LabState(prefix=self.plan.prefix, topology={})
        wanted = self.topo.model_dump(mode="json")
        if state.topology and state.topology != wanted:
            raise ConfigError(f"the lab {self.plan.prefix!r} runs with another topology: "
                              "run `lab down` first (changes are not applied to a running lab)")
        state.topology = wanted
        missing = [m for m, mod in (("gateway", "lab.gateway.cli"), ("rs-agent", "lab.rsagent.cli"),
                                    ("wireguard", "peerlab_tui.core.tunnel.wggo"))
                   if not available(mod)]
        state.missing = missing
        # Children started by other libraries (wireguard-go) inherit the marker too, so down finds them.
        previous = os.environ.get(procs.MARKER)
        os.environ[procs.MARKER] = self.plan.prefix
        gateway_thread: threading.Thread | None = None
        gateway_error: list[BaseException] = []
        try:
            self._ensure_bgp_secret()
            if "wireguard" not in missing:
                self._ensure_keys()  # the gateway's config carries the route servers' public keys
            if "gateway" not in missing:
                # The gateway takes the longest to start (Python imports): start it while the network builds.
                def run_gateway() -> None:
                    try:
                        self._start_gateway(state)
                    except BaseException as exc:
                        gateway_error.append(exc)

                gateway_thread = threading.Thread(target=run_gateway, name="lab-gateway", daemon=True)
                gateway_thread.start()
            t0 = time.monotonic()
            self._build_network(state)
            log.info("network ready after %.2f s", time.monotonic() - t0)
            if "wireguard" not in missing:
                self._build_wireguard(state)
                log.info("WireGuard ready after %.2f s", time.monotonic() - t0)
            self._start_upstream(state)
            for rs in self.topo.route_servers:
                self._start_rs_bird(state, rs)
            log.info("BIRDs ready after %.2f s", time.monotonic() - t0)
            if gateway_thread is not None:
                gateway_thread.join(timeout=START_TIMEOUT + 60)
                if gateway_thread.is_alive():
                    raise ExternalProgramError("the gateway did not start in time")
                if gateway_error:
                    raise gateway_error[0]
                log.info("gateway ready after %.2f s", time.monotonic() - t0)
            if "rs-agent" not in missing and "gateway" not in missing:
                for rs in self.topo.route_servers:
                    self._start_agent(state, rs)
        finally:
            if gateway_thread is not None:
                gateway_thread.join(timeout=START_TIMEOUT + 60)
            if previous is None:
                os.environ.pop(procs.MARKER, None)
            else:
                os.environ[procs.MARKER] = previous
            write_state(self.state_file, state)
        return self.summary(state)

    def summary(self, state: LabState) -> dict[str, Any]:
        """The JSON answer of ``lab up``."""
        return {
            "gateway": state.gateway_url,
            "admin_token_file": str(self.admin_token_file),
            "route_servers": [
                {"name": rs.name, "netns": self.plan.rs_netns(rs.name), "asn": self.plan.rs_asn(rs)}
                for rs in self.topo.route_servers
            ],
            "state_dir": str(self.dir),
            "missing": state.missing,
        }

    def _members(self, state: LabState) -> list[tuple[str, str | None, str]]:
        """(port key, namespace or None for the host, underlay address) of every underlay member."""
        plan = self.plan
        members: list[tuple[str, str | None, str]] = [
            ("host", None, str(plan.host_address)),
            ("up", plan.upstream_netns, str(plan.upstream_address)),
        ]
        members += [(rs.name, plan.rs_netns(rs.name), str(plan.rs_underlay_address(rs.name)))
                    for rs in self.topo.route_servers]
        members += [(f"u{u.index}", u.netns, str(u.underlay_address))
                    for u in state.users.values() if u.netns and u.index]
        return members

    def _build_network(self, state: LabState) -> None:
        plan = self.plan
        for name in self.lab_netns():
            ns.create_netns(name)
        ns.create_bridge(plan.bridge, netns=plan.ixp_netns)
        for key, member_ns, address in self._members(state):
            if member_ns is not None:
                ns.create_netns(member_ns)
            self._attach(key, member_ns, address)

    def _attach(self, key: str, member_ns: str | None, address: str) -> None:
        """Connect a member to the bridge with a veth (created directly in both namespaces)."""
        plan = self.plan
        port = plan.port(key)
        port_ok = ns.link_exists(port, netns=plan.ixp_netns)
        end_ok = ns.link_exists(plan.netns_link, netns=member_ns)
        if not (port_ok and end_ok):
            # Half a pair (a member namespace deleted and made again, a port removed): recreate the pair.
            if port_ok:
                ns.run(["ip", "link", "del", port], netns=plan.ixp_netns, check=False)
            if end_ok:
                ns.run(["ip", "link", "del", plan.netns_link], netns=member_ns, check=False)
            # A fixed MAC per member: after a rebuild the neighbours' caches still point at the right one.
            peer = ["peer", "name", plan.netns_link, "address", plan.member_mac(key),
                    *(["netns", member_ns] if member_ns else [])]
            ns.run(["ip", "link", "add", "name", port, "netns", plan.ixp_netns, "type", "veth", *peer])
        ns.run(["ip", "link", "set", port, "master", plan.bridge, "up"], netns=plan.ixp_netns)
        ns.run(["ip", "link", "set", plan.netns_link, "up"], netns=member_ns)
        ns.add_address(plan.netns_link, f"{address}/64", netns=member_ns)

    # --- WireGuard ------------------------------------------------------------------------------------------
    def _build_wireguard(self, state: LabState) -> None:
        from peerlab_tui.core.tunnel import keys
        from peerlab_tui.core.tunnel.wggo import WireGuardGo

        for rs in self.topo.route_servers:
            private, _ = keys.load_or_create_private_key(self.rs_key_file(rs.name))
            netns_name = self.plan.rs_netns(rs.name)
            ifname = self.plan.rs_wg_ifname(rs.name)
            key = f"wg-{rs.name}"
            rec = state.processes.get(key)
            dev = WireGuardGo(ifname, netns_name)
            alive = rec is not None and procs.matches(rec.pid, rec.argv, self.plan.prefix, netns_name) \
                and dev.exists() \
                and ns.link_exists(ifname, netns=netns_name)
            if not alive:
                if rec is not None:
                    procs.terminate([rec.pid], self.plan.prefix)
                if dev.exists() and not ns.link_exists(ifname, netns=netns_name):
                    # A stale UAPI socket of a dead daemon would make create() refuse.
                    Path(dev.uapi.path).unlink(missing_ok=True)
                log_path = self.logs / f"{key}.log"
                # A new device has no peers: the running agent notices at its next WireGuard reconcile
                # (it compares against the device's actual peers) and puts them back.
                dev = WireGuardGo.create(ifname, netns_name, log_path=log_path)
                if dev.pid is None:
                    raise ExternalProgramError(f"wireguard-go for {ifname} has no PID")
                argv = procs.cmdline(dev.pid) or []
                state.processes[key] = ProcessRecord(pid=dev.pid, argv=argv, netns=netns_name,
                                                     log=str(log_path))
            status = dev.status()
            if status.public_key != keys.public_key(private) or status.listen_port != rs.wireguard_port:
                # Peers are the agent's: keep whatever it configured.
                dev.configure(private, rs.wireguard_port, [], replace=False)
            ns.add_address(ifname, f"{self.plan.rs_overlay_address(rs.name)}/64", netns=netns_name)
            ns.run(["ip", "link", "set", ifname, "up"], netns=netns_name)

    def _ensure_bgp_secret(self) -> None:
        if not self.bgp_secret_file.exists():
            write_private(self.bgp_secret_file, secrets.token_urlsafe(24) + "\n")

    def bgp_secret(self) -> str:
        """The TCP MD5 password of the route server <-> upstream sessions."""
        try:
            return self.bgp_secret_file.read_text().strip()
        except OSError as exc:
            raise LabError(f"no BGP secret at {self.bgp_secret_file}: run lab up") from exc

    def _ensure_keys(self) -> None:
        from peerlab_tui.core.tunnel import keys

        for rs in self.topo.route_servers:
            keys.load_or_create_private_key(self.rs_key_file(rs.name))

    def rs_public_key(self, rs: str) -> str | None:
        """A route server's WireGuard public key (None before its key exists)."""
        from peerlab_tui.core.tunnel import keys

        path = self.rs_key_file(rs)
        return keys.public_key(keys.read_private_key(path)) if path.exists() else None

    # --- daemons ------------------------------------------------------------------------------------------
    def _ensure_daemon(self, state: LabState, key: str, argv: list[str], *, netns: str | None,
                       ready: Callable[[], bool], env: dict[str, str] | None = None) -> bool:
        """Start ``argv`` unless the recorded daemon still runs it; wait until ``ready``. True if started."""
        rec = state.processes.get(key)
        if rec is not None and rec.argv == argv and procs.matches(rec.pid, argv, self.plan.prefix, netns):
            return False
        if rec is not None:
            procs.terminate([rec.pid], self.plan.prefix)  # stale or changed: only ever our own marker
        log_path = self.logs / f"{key}.log"
        pid = procs.spawn(argv, prefix=self.plan.prefix, log_path=log_path, netns=netns, env=env)
        state.processes[key] = ProcessRecord(pid=pid, argv=argv, netns=netns, log=str(log_path))
        wait_for(ready, timeout=START_TIMEOUT, what=key, alive=lambda: procs.is_running(pid),
                 log_path=log_path)
        return True

    def _start_upstream(self, state: LabState) -> None:
        up = self.topo.upstream
        plan = self.plan
        statics = []
        for r in up.routes:
            attrs = " ".join(f"bgp_path.prepend({asn});" for asn in reversed(r.prepend))
            statics.append(f"  route {r.prefix} unreachable" + (f" {{ {attrs} }};" if attrs else ";"))
        # Users share the underlay with these sessions: TCP MD5 (no injected or reset session without the
        # secret) and GTSM (TTL 255: only a directly connected sender).
        neighbors = [
            f"protocol bgp rs_{rs.name} from route_server {{\n"
            f"  local {plan.upstream_address} as {up.asn};\n"
            f"  neighbor {plan.rs_underlay_address(rs.name)} as {plan.rs_asn(rs)};\n"
            f'  password "{self.bgp_secret()}";\n'
            f"  ttl security on;\n}}"
            for rs in self.topo.route_servers
        ]
        conf = Template((HERE / "upstream.conf").read_text()).substitute(
            router_id=up.router_id, asn=up.asn, static_routes="\n".join(statics),
            neighbors="\n".join(neighbors),
        )
        ns.add_address("lo", f"{up.address}/128", netns=plan.upstream_netns)
        path = self.upstream_dir / "bird.conf"
        sock = self.upstream_dir / "bird.ctl"
        changed = not path.exists() or path.read_text() != conf
        write_private(path, conf)  # holds the BGP password
        argv = ["bird", "-f", "-c", str(path), "-s", str(sock)]
        started = self._ensure_daemon(state, "bird-upstream", argv, netns=plan.upstream_netns,
                                      ready=lambda: bird_up(sock))
        if changed and not started:
            bird_configure(sock)

    def rs_settings(self, rs: RouteServerSpec) -> dict[str, Any]:
        """The agent's static settings of a route server (``rs.yaml``, ``lab.rsagent.settings``)."""
        plan = self.plan
        upstream = self.topo.upstream
        return {
            "name": rs.name,
            "asn": plan.rs_asn(rs),
            "router_id": str(rs.router_id),
            "overlay": [{"network": str(plan.rs_overlay_network(rs.name)),
                         "address": str(plan.rs_overlay_address(rs.name))}],
            "upstreams": [{"name": "upstream", "address": str(plan.upstream_address), "asn": upstream.asn,
                           "source_address": str(plan.rs_underlay_address(rs.name)),
                           "password": self.bgp_secret(), "ttl_security": True}],
            # The lab's own ULA site (underlay, overlays): never accepted from users or the upstream.
            "platform_prefixes": [str(plan.site)],
            "pools": list(self.topo.gateway.prefix_pools),
            "wireguard_interface": plan.rs_wg_ifname(rs.name),
            **self.topo.policy.model_dump(mode="json"),
        }

    def _rs_initial_config(self, rs: RouteServerSpec) -> str:
        plan = self.plan
        if available("lab.rsagent.render") and available("lab.rsagent.settings"):
            from lab.rsagent import render, settings  # type: ignore[attr-defined,unused-ignore]

            try:
                model = settings.RouteServerSettings.model_validate(self.rs_settings(rs))
            except ValueError as exc:
                raise ConfigError(f"route server {rs.name}: settings refused by the rs-agent: {exc}") from exc
            return str(render.render_config(model, [], []))
        return Template((HERE / "rs_fallback.conf").read_text()).substitute(
            router_id=rs.router_id, asn=plan.rs_asn(rs), underlay_address=plan.rs_underlay_address(rs.name),
            upstream_address=plan.upstream_address, upstream_asn=self.topo.upstream.asn,
            password=self.bgp_secret(),
        )

    def _start_rs_bird(self, state: LabState, rs: RouteServerSpec) -> None:
        d = self.rs_dir(rs.name)
        settings_text = yaml.safe_dump(self.rs_settings(rs), sort_keys=False)
        settings_file = d / "rs.yaml"
        if settings_file.exists() and settings_file.read_text() != settings_text:
            # The agent reads rs.yaml when it starts: a running one would keep rendering the old settings.
            self._stale_agents.add(rs.name)
        write_private(settings_file, settings_text)
        conf = d / "bird.conf"
        if not conf.exists():  # afterwards the agent owns it (it holds the users' policy)
            write_private(conf, self._rs_initial_config(rs))  # holds the BGP password
        sock = self.rs_socket(rs.name)
        argv = ["bird", "-f", "-c", str(conf), "-s", str(sock)]
        started = self._ensure_daemon(state, f"bird-{rs.name}", argv, netns=self.plan.rs_netns(rs.name),
                                      ready=lambda: bird_up(sock))
        up_sock = self.upstream_dir / "bird.ctl"
        if started and bgp_established(up_sock).get(f"rs_{rs.name}"):
            # The upstream still holds a session to the BIRD we replaced (it vanished with its namespace,
            # without a word): restart it now rather than wait for the hold timer.
            with contextlib.suppress(BirdError), BirdControl(up_sock, timeout=5.0) as ctl:
                ctl.command(f"restart rs_{rs.name}")

    # --- gateway ------------------------------------------------------------------------------------------
    def _gateway_settings(self, port: int) -> dict[str, Any]:
        gw = self.topo.gateway
        plan = self.plan
        servers = []
        for rs in self.topo.route_servers:
            pub = self.rs_public_key(rs.name)
            if pub is None:
                continue
            servers.append({
                "name": rs.name, "public_key": pub,
                "endpoint": f"[{plan.rs_underlay_address(rs.name)}]:{rs.wireguard_port}",
                "overlay_network": str(plan.rs_overlay_network(rs.name)),
                "overlay_address": str(plan.rs_overlay_address(rs.name)),
                "asn": plan.rs_asn(rs),
            })
        return {
            **gw.extra,
            "listen": f"{gw.host}:{port}",
            "db": self.db_url,
            "prefix_pools": list(gw.prefix_pools),
            "lease_length": gw.lease_length,
            "asn_range": f"{gw.asn_range[0]}-{gw.asn_range[1]}",
            "route_servers": servers,
        }

    def _start_gateway(self, state: LabState) -> None:
        port = self.topo.gateway.port
        if state.gateway_url:
            port = int(state.gateway_url.rsplit(":", 1)[1])
        elif port == 0:
            port = free_port()
        url = f"http://{self.topo.gateway.host}:{port}"
        state.gateway_url = url
        text = yaml.safe_dump(self._gateway_settings(port), sort_keys=False)
        if self.gateway_config.exists() and self.gateway_config.read_text() != text \
                and (rec := state.processes.get("gateway")) is not None:
            procs.terminate([rec.pid], self.plan.prefix)  # a changed topology: restart with the new config
        write_private(self.gateway_config, text)
        if not self.admin_token_file.exists() and (rec := state.processes.get("gateway")) is not None:
            # The token is written by the gateway process when it initialises the database: a gateway that
            # runs without one (a token file lost) is restarted so that it makes a new one.
            procs.terminate([rec.pid], self.plan.prefix)
            state.processes.pop("gateway")
        # One process initialises the database (when the admin token is missing) and serves: it starts at
        # once, so its imports and the initialisation overlap with the network build (the critical path).
        argv = [sys.executable, "-m", "lab.topology.gateway_launcher",
                "--admin-token-file", str(self.admin_token_file), "--db", self.db_url, "--",
                "serve", "--listen", f"{self.topo.gateway.host}:{port}",
                "--db", self.db_url, "--config", str(self.gateway_config)]
        self._ensure_daemon(state, "gateway", argv, netns=None, ready=lambda: gateway_healthy(url))
        if not self.service_token_file.exists():
            self._make_service_token(url)

    def _make_service_token(self, url: str) -> None:
        """The agents' scoped token, through the admin API (the ``token add`` verb as a fallback)."""
        from peerlab_tui._cli.common import run_async
        from peerlab_tui.core.gateway import AdminClient

        async def create() -> str:
            async with AdminClient(url, self.admin_token()) as admin:
                return (await admin.create_service_token(f"{self.plan.prefix}-agents", SERVICE_SCOPES)).token

        try:
            token = run_async(create())
        except PeerlabError as exc:
            log.info("service token through the admin API failed (%s); using gateway token add", exc)
            scopes = [a for s in SERVICE_SCOPES for a in ("--scope", s)]
            out = subprocess.run(python_cli("gateway", "token", "add", f"{self.plan.prefix}-agents", *scopes,
                                            "--db", self.db_url, "--json"),
                                 capture_output=True, text=True, timeout=60, check=False)
            if out.returncode != 0:
                raise ExternalProgramError(f"gateway token add failed: {out.stderr.strip()}") from exc
            token = json.loads(out.stdout)["token"]
        write_private(self.service_token_file, token + "\n")

    def admin_token(self) -> str:
        """The gateway's admin token."""
        try:
            return self.admin_token_file.read_text().strip()
        except OSError as exc:
            raise LabError(f"no admin token at {self.admin_token_file}: is the lab up?") from exc

    # --- agents ---------------------------------------------------------------------------------------------
    def _start_agent(self, state: LabState, rs: RouteServerSpec) -> None:
        token = self.service_token_file.read_text().strip()
        rec = state.processes.get(f"agent-{rs.name}")
        if rs.name in self._stale_agents and rec is not None:
            procs.terminate([rec.pid], self.plan.prefix)  # restarted below with the new rs.yaml
        argv = python_cli("rs-agent", "--rs", rs.name, "--gateway", str(state.gateway_url),
                          "--bird-socket", str(self.rs_socket(rs.name)),
                          "--config-dir", str(self.rs_dir(rs.name)), "--netns", self.plan.rs_netns(rs.name),
                          "--interval", f"{self.topo.agent_interval:g}")
        # The token travels in the environment, not on the command line (which every user can read).
        self._ensure_daemon(state, f"agent-{rs.name}", argv, netns=None, ready=lambda: True,
                            env={"PEERLAB_SERVICE_TOKEN": token})

    # --- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Every part of the lab with whether it is up; ``ok`` is true only when all are."""
        state = self.load_state()
        plan = self.plan
        parts: list[dict[str, Any]] = []

        def part(name: str, ok: bool, detail: str = "") -> None:
            parts.append({"part": name, "ok": ok, "detail": detail})

        if state is None:
            part("state", False, f"no lab state in {self.dir} (run lab up)")
            return {"ok": False, "prefix": plan.prefix, "state_dir": str(self.dir), "parts": parts,
                    "down": ["state"]}
        for missing in state.missing:
            part(missing, False, "not installed: this part of the platform is missing")
        spaces = [*self.lab_netns(), *(u.netns for u in state.users.values() if u.netns)]
        for name in spaces:
            part(f"netns {name}", ns.netns_exists(name))
        bridge_ok = ns.netns_exists(plan.ixp_netns) and ns.link_exists(plan.bridge, netns=plan.ixp_netns)
        part(f"bridge {plan.bridge}", bridge_ok)
        part(f"link {plan.host_link} (host)", ns.link_exists(plan.host_link))
        for key, rec in sorted(state.processes.items()):
            alive = procs.matches(rec.pid, rec.argv, plan.prefix, rec.netns)
            part(f"process {key}", alive, f"pid {rec.pid}" + ("" if alive else " is not running"))
        if state.gateway_url and "gateway" not in state.missing:
            ok = gateway_healthy(state.gateway_url)
            part("gateway /healthz", ok, state.gateway_url)
        up_sock = self.upstream_dir / "bird.ctl"
        part("bird upstream socket", bird_up(up_sock), str(up_sock))
        sessions = bgp_established(up_sock) if up_sock.exists() else {}
        for rs in self.topo.route_servers:
            sock = self.rs_socket(rs.name)
            part(f"bird {rs.name} socket", bird_up(sock), str(sock))
            est = sessions.get(f"rs_{rs.name}", False)
            part(f"bgp upstream-{rs.name}", est, "Established" if est else "not established")
            if "wireguard" not in state.missing:
                ifname = plan.rs_wg_ifname(rs.name)
                nsname = plan.rs_netns(rs.name)
                part(f"wireguard {ifname}", self._wg_ok(ifname, nsname, rs.wireguard_port), f"netns {nsname}")
            if "rs-agent" not in state.missing and "gateway" not in state.missing:
                ok, detail = self._agent_ok(rs.name)
                part(f"agent {rs.name}", ok, detail)
        down = [p["part"] for p in parts if not p["ok"]]
        return {"ok": not down, "prefix": plan.prefix, "state_dir": str(self.dir),
                "gateway": state.gateway_url, "parts": parts, "down": down}

    def _agent_ok(self, rs: str) -> tuple[bool, str]:
        """An agent's own report (``status.json``): down when its last step failed (BIRD unreachable, a
        refused configuration, WireGuard out of sync), even if every daemon is alive."""
        path = self.rs_dir(rs) / "status.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return True, "starting (no status.json yet)"
        except (OSError, ValueError) as exc:
            return False, f"unreadable {path}: {exc}"
        error = data.get("last_error") if isinstance(data, dict) else "status.json is not an object"
        if error:
            return False, f"last_error: {error}"
        return True, f"{data.get('sessions', 0)} sessions applied"

    def _wg_ok(self, ifname: str, netns_name: str, port: int) -> bool:
        if not ns.netns_exists(netns_name) or not ns.link_exists(ifname, netns=netns_name):
            return False
        try:
            from peerlab_tui.core.tunnel.wggo import WireGuardGo

            return bool(WireGuardGo(ifname, netns_name).status().listen_port == port)
        except (PeerlabError, OSError, ImportError):
            return False

    # --- down ---------------------------------------------------------------------------------------------
    def down(self) -> dict[str, Any]:
        """Remove everything this lab created (also after a crash or with state.json lost), nothing else."""
        with self._lock():
            return self._down()

    def _down(self) -> dict[str, Any]:
        plan = self.plan
        state = None
        with contextlib.suppress(ConfigError):
            state = self.load_state()
        recorded = [r.pid for r in state.processes.values()] if state else []
        killed = procs.terminate([*recorded, *procs.marked_pids(plan.prefix)], plan.prefix)
        removed_ns = []
        foreign: dict[str, list[int]] = {}
        wg_stopped: list[dict[str, Any]] = []
        for name in ns.list_netns():
            if plan.owns_netns(name):
                # A user's WireGuard device (``tunnel up --netns``) lives in the lab's namespace and means
                # nothing without it; left alone, its wireguard-go would run on with a socket in
                # /var/run/wireguard. Stopped through its own interface, and only when it is one.
                wg_stopped += stop_wireguard_in_netns(name)
                # Other processes we did not start (a user's speaker in their namespace) are never signalled:
                # they keep running in the detached namespace, and are listed so the user can stop them.
                others = [p for p in ns.pids_in_netns(name) if procs.is_running(p)]
                if others:
                    foreign[name] = others
                ns.delete_netns(name)
                removed_ns.append(name)
        removed_links = []
        for name in host_links():
            if name.startswith(f"{plan.prefix}-"):
                ns.delete_link(name)
                removed_links.append(name)
        wg_dir = Path("/var/run/wireguard")
        if wg_dir.is_dir():
            for sock in wg_dir.glob(f"{plan.prefix}-*.sock"):
                sock.unlink(missing_ok=True)
        removed_dir = False
        marker = self.dir / MARKER_FILE
        if marker.exists() and marker.read_text().strip() == plan.prefix:
            shutil.rmtree(self.dir, ignore_errors=True)
            removed_dir = True
        if foreign:
            log.warning("processes the lab did not start were left running: %s", foreign)
        return {"prefix": plan.prefix, "killed": sorted(killed), "netns_removed": sorted(removed_ns),
                "not_ours_left_running": foreign, "wireguard_stopped": wg_stopped,
                "links_removed": removed_links, "state_dir_removed": removed_dir, "state_dir": str(self.dir)}

    # --- users --------------------------------------------------------------------------------------------
    def add_user(self, name: str, *, with_netns: bool) -> dict[str, Any]:
        """Create a gateway user; with ``with_netns`` also a namespace on the underlay for them."""
        with self._lock():
            return self._add_user(name, with_netns=with_netns)

    def _add_user(self, name: str, *, with_netns: bool) -> dict[str, Any]:
        state = self.load_state()
        if state is None or not state.gateway_url:
            raise LabError(f"the lab {self.plan.prefix!r} is not up (no gateway in {self.state_file})")
        if name in RESERVED_SUFFIXES or name in {r.name for r in self.topo.route_servers}:
            raise InputError(f"a user cannot be named {name!r}: the lab uses that name")
        if name in state.users:
            raise InputError(f"user {name!r} already exists in this lab")
        token = self._create_gateway_user(state.gateway_url, name)
        token_file = self.user_token_file(name)
        write_private(token_file, token + "\n")
        record = UserRecord(name=name, token_file=str(token_file))
        if with_netns:
            used = {u.index for u in state.users.values() if u.index}
            index = next(i for i in range(1, 10_000) if i not in used)
            record.index = index
            record.netns = self.plan.user_netns(name)
            record.underlay_address = str(self.plan.user_underlay_address(index))
        state.users[name] = record
        write_state(self.state_file, state)
        if record.netns:
            ns.create_netns(record.netns)
            self._attach(f"u{record.index}", record.netns, str(record.underlay_address))
        return {"name": name, "token": token, "token_file": str(token_file), "netns": record.netns,
                "underlay_address": record.underlay_address or str(self.plan.host_address),
                "gateway": state.gateway_url}

    def _create_gateway_user(self, url: str, name: str) -> str:
        from peerlab_tui._cli.common import run_async
        from peerlab_tui.core.gateway import AdminClient

        async def create() -> str:
            async with AdminClient(url, self.admin_token()) as admin:
                return (await admin.create_user(name)).token

        return run_async(create())


def init_gateway_database(db_url: str, *, rotate: bool) -> str:
    """Create or migrate the gateway's schema and create (``rotate``: replace) its admin token; return it."""
    from lab.gateway.config import build_config
    from lab.gateway.db import Database, migrate
    from lab.gateway.service import GatewayService

    db = Database(db_url)
    try:
        migrate(db)
        # No environment: the operator's PEERLAB_GW_* settings are not the lab's.
        return GatewayService(db, build_config({"db": db_url}, {})).create_admin_token(rotate=rotate)
    finally:
        db.dispose()


def stop_wireguard_in_netns(netns_name: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Stop every wireguard-go whose interface lives in the (lab's) namespace ``netns_name``.

    A PID qualifies only when it runs in that namespace, is ``wireguard-go`` for an interface ``IF`` (its
    last argument), and ``IF`` is a link in that namespace. Deleting the link makes wireguard-go exit (and
    remove its UAPI socket); one that does not is signalled, re-checked before each signal. Returns
    ``{"netns", "ifname", "pid", "stopped"}`` per device.
    """
    from peerlab_tui.core.tunnel.wggo import find_wireguard_go_pid, is_wireguard_go_for

    stopped: list[dict[str, Any]] = []
    for pid in ns.pids_in_netns(netns_name):
        argv = procs.cmdline(pid) or []
        ifname = argv[-1] if argv else ""
        if not (ifname and is_wireguard_go_for(pid, ifname) and procs.in_netns(pid, netns_name)
                and ns.link_exists(ifname, netns=netns_name)):
            continue
        ns.run(["ip", "link", "del", ifname], netns=netns_name, check=False)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and is_wireguard_go_for(pid, ifname) and procs.in_netns(pid, netns_name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and is_wireguard_go_for(pid, ifname) and procs.is_running(pid):
                time.sleep(0.05)
            if not procs.is_running(pid) or not is_wireguard_go_for(pid, ifname):
                break
        gone = not procs.is_running(pid) or not is_wireguard_go_for(pid, ifname)
        if gone and find_wireguard_go_pid(ifname) is None:
            # wireguard-go removes its socket on a clean exit; not after SIGKILL.
            Path(f"/var/run/wireguard/{ifname}.sock").unlink(missing_ok=True)
        log.info("stopped the user's wireguard-go for %s in %s (pid %d)", ifname, netns_name, pid)
        stopped.append({"netns": netns_name, "ifname": ifname, "pid": pid, "stopped": gone})
    return stopped


def gateway_healthy(url: str) -> bool:
    """True when the gateway answers ``GET /healthz`` with 200."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def host_links() -> list[str]:
    """Names of the interfaces in the host namespace."""
    out = ns.run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names

