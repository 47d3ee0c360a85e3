"""``peerlab-tui demo``: the embedded default, end to end on one machine (root).

The whole slice, each step printed with its duration:

1. ``lab up`` with its own name prefix and a temporary state directory (never collides with your lab);
2. ``lab user add demo --netns``: a gateway user whose side lives in its own namespace;
3. an ASN and a prefix lease from the gateway;
4. ``tunnel up``: the WireGuard overlay to both route servers (wireguard-go);
5. ``bgp up``: the BGP daemon (ExaBGP) in the user's namespace, sessions Established at rs1 and rs2;
6. ``announce`` the leased prefix and wait until the looking glass (``routes``, the gateway's view fed by
   the route servers' agents) shows it ACCEPTED at every route server;
7. ``received``: the upstream's routes, learned through the route servers;
8. a ping from an address of the leased prefix to the upstream over the tunnel;
9. ``withdraw`` and wait until it is gone from the looking glass;
10. clean up: ``bgp down``, ``tunnel down``, ``lab down`` (skipped with ``--keep``).

The speaker daemon and every lab daemon are real processes; the steps call the same library code as the
CLI verbs. Any failure still cleans up and exits non-zero naming the failed step. ``--gateway-only`` runs the
older, lighter demo: a throwaway gateway, a user, an ASN and a lease (no root needed).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from lab.topology.procs import is_running
from peerlab_tui._cli.common import emit_json, handle_errors, json_option, run_async
from peerlab_tui.core.errors import ExternalProgramError, GatewayError, InputError, PeerlabError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
SESSION_TIMEOUT = 60.0  # sessions Established at every route server
VERDICT_TIMEOUT = 30.0  # the looking glass shows the verdict
USER = "demo"
T = TypeVar("T")


class DemoError(PeerlabError):
    """A step of the demo failed (the message names it); everything it built was removed."""

    def __init__(self, step: str, cause: BaseException) -> None:
        detail = cause.message if isinstance(cause, PeerlabError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"demo failed at step '{step}': {detail}")
        self.step = step
        self.exit_code = cause.exit_code if isinstance(cause, PeerlabError) else 1  # type: ignore[misc]


# --- the gateway-only demo (issue 2) ------------------------------------------------------------------------


def _init_database(db_url: str) -> str:
    """Create the schema and the admin token (what ``gateway init`` does)."""
    from lab.gateway.config import build_config
    from lab.gateway.db import Database, migrate
    from lab.gateway.service import GatewayService

    db = Database(db_url)
    try:
        migrate(db)
        return GatewayService(db, build_config({"db": db_url}, {})).create_admin_token(rotate=False)
    finally:
        db.dispose()


def _start(workdir: Path, db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    log = (workdir / "gateway.log").open("wb")
    cmd = [sys.executable, "-m", "peerlab_tui", "gateway", "serve", "--listen", "127.0.0.1:0", "--db", db_url,
           "--port-file", str(port_file)]
    # The demo is self-contained: the operator's PEERLAB_GW_* settings must not leak into it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLAB_GW_")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = (workdir / "gateway.log").read_text(errors="replace")
            raise ExternalProgramError(f"the gateway exited with {proc.returncode}: {output.strip()}")
        if port_file.exists() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    _stop(proc)
    raise ExternalProgramError(f"the gateway did not become healthy within {STARTUP_TIMEOUT:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _call(client: httpx.Client, method: str, path: str, token: str, **kw: Any) -> Any:
    resp = client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
    if resp.status_code >= 400:
        raise GatewayError(
            f"{method} {path} failed: {resp.status_code} {resp.text}", status_code=resp.status_code
        )
    return resp.json()


def run_gateway_only(hours: int, as_json: bool) -> None:
    """A throwaway gateway, a demo user with an ASN and a lease, then everything removed (no root)."""

    def step(text: str) -> None:
        if not as_json:
            click.echo(text)

    with tempfile.TemporaryDirectory(prefix="peerlab-demo-") as tmp:
        workdir = Path(tmp)
        db_url = f"sqlite:///{workdir / 'gateway.sqlite'}"
        step(f"1. initialising a gateway database in {workdir}")
        admin = _init_database(db_url)
        proc, url = _start(workdir, db_url)
        try:
            step(f"2. gateway listening on {url}")
            with httpx.Client(base_url=url, timeout=30) as client:
                user = _call(client, "POST", "/admin/users", admin, json={"name": "demo"})
                step(f"3. created user {user['name']} (user_hash {user['user_hash']})")
                asn = _call(client, "POST", "/api/user/asn", user["token"])
                step(f"4. assigned ASN {asn['asn']}")
                lease = _call(
                    client, "POST", "/api/user/prefix", user["token"], json={"duration_hours": hours}
                )
                step(f"5. leased {lease['prefix']} until {lease['end_time']}")
        finally:
            _stop(proc)
        step("6. gateway stopped, temporary files removed")
    if as_json:
        emit_json(
            {
                "gateway": url,
                "user": user["name"],
                "user_hash": user["user_hash"],
                "asn": asn["asn"],
                "lease": {k: lease[k] for k in ("prefix", "start_time", "end_time")},
            }
        )


# --- the whole slice ---------------------------------------------------------------------------------------


def poll(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something other than None/False; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except PeerlabError as exc:  # a daemon still starting: retried until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            hint = f" (last error: {last_error})" if last_error else ""
            raise ExternalProgramError(f"timed out after {timeout:g} s waiting for {what}{hint}")
        time.sleep(interval)


@dataclass
class StepRecord:
    """One step of the demo as reported in the summary."""

    number: int
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class SliceDemo:
    """The end-to-end demo; :meth:`run` drives it, :meth:`cleanup` removes what it built."""

    hours: int
    keep: bool
    echo: Callable[[str], None]
    prefix: str = field(default_factory=lambda: f"d{secrets.token_hex(3)}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pl-demo-")))
    steps: list[StepRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    lab: Any = None  # lab.topology.builder.Lab
    gateway_url: str | None = None
    token: str | None = None
    netns: str | None = None
    bgp_started: bool = False
    tunnel_started: bool = False

    @property
    def user_state(self) -> Path:
        """The demo user's state directory (tunnel key and state, BGP daemon socket)."""
        return self.workdir / "user"

    def step(self, name: str, action: Callable[[], str]) -> None:
        """Run one step, print it with its duration; a failure becomes a :class:`DemoError`."""
        record = StepRecord(len(self.steps) + 1, name)
        self.steps.append(record)
        started = time.monotonic()
        try:
            record.detail = action()
            record.ok = True
        except (Exception, KeyboardInterrupt) as exc:
            record.seconds = time.monotonic() - started
            self.echo(f"[{record.number:2d}] {name:<34} FAILED after {record.seconds:.2f} s")
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise DemoError(name, exc) from exc
        record.seconds = time.monotonic() - started
        self.echo(f"[{record.number:2d}] {name:<34} {record.seconds:6.2f} s  {record.detail}")

    # --- helpers -------------------------------------------------------------------------------------------

    def client(self) -> Any:
        """A gateway client of the demo user."""
        from peerlab_tui.core.gateway import GatewayClient

        assert self.gateway_url and self.token
        return GatewayClient(self.gateway_url, self.token)

    def control(self, op: str, **params: Any) -> Any:
        """One request to the user's BGP daemon over its control socket."""
        from peerlab_tui.core.bgp.daemon import ControlClient

        return run_async(ControlClient.for_state_dir(self.user_state).request(op, **params))

    def verdicts(self) -> list[Any]:
        """The looking glass: ``GET /api/user/routes`` (what ``peerlab-tui routes`` shows)."""

        async def fetch() -> list[Any]:
            async with self.client() as gw:
                return list((await gw.routes()).routes)

        return run_async(fetch())

    # --- the steps -----------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every step; the caller runs :meth:`cleanup` whatever happens."""
        from lab.topology.builder import Lab
        from lab.topology.models import load_topology

        self.lab = Lab(load_topology(None, prefix=self.prefix), self.workdir / "lab")
        rs_names = [rs.name for rs in self.lab.topo.route_servers]
        upstream = self.lab.topo.upstream
        self.summary.update(prefix=self.prefix, state_dir=str(self.workdir), route_servers=rs_names)

        def lab_up() -> str:
            result = self.lab.up()
            if result["missing"]:
                raise ExternalProgramError(f"parts of the platform are not installed: {result['missing']}")
            self.gateway_url = result["gateway"]
            self.summary["gateway"] = self.gateway_url
            return f"prefix {self.prefix}, gateway {self.gateway_url}, route servers {', '.join(rs_names)}"

        def user_add() -> str:
            user = self.lab.add_user(USER, with_netns=True)
            self.token, self.netns = user["token"], user["netns"]
            self.summary.update(user=USER, netns=self.netns)
            return f"user {USER}, namespace {self.netns}"

        def lease() -> str:
            async def go() -> tuple[int, Any]:
                async with self.client() as gw:
                    return await gw.ensure_asn(), await gw.request_prefix(self.hours)

            asn, granted = run_async(go())
            self.summary.update(asn=asn, lease={"prefix": granted.prefix,
                                                "start_time": granted.start_time.isoformat(),
                                                "end_time": granted.end_time.isoformat()})
            return f"AS{asn}, leased {granted.prefix} until {granted.end_time:%H:%M:%S} UTC"

        def tunnel_up() -> str:
            from peerlab_tui.core.tunnel import TunnelManager

            async def go() -> Any:
                async with self.client() as gw:
                    return await TunnelManager(gw, self.user_state, self.netns).up()

            self.tunnel_started = True
            result = run_async(go())
            self.summary["tunnel"] = {i.rs_name: i.ifname for i in result.interfaces}
            # Handshake done and the route servers' agents have our key: each answers over its tunnel.
            reachable = run_async(TunnelManager(None, self.user_state, self.netns).wait_reachable(timeout=30))
            if not all(reachable.values()):
                raise ExternalProgramError("no answer over the tunnel from "
                                           + ", ".join(rs for rs, ok in reachable.items() if not ok))
            return ", ".join(f"{i.rs_name} via {i.ifname} (answers)" for i in result.interfaces)

        def bgp_up() -> str:
            from peerlab_tui._cli.bgp import build_spec, start_daemon
            from peerlab_tui.core.bgp.daemon import write_spec

            assert self.gateway_url and self.token

            async def go() -> Any:
                async with self.client() as gw:
                    return await build_spec(gw, self.user_state, netns=self.netns, tunnel=True,
                                            gateway_url=self.gateway_url or "", hold_time=90, safety={})

            write_spec(self.user_state, run_async(go()))
            self.bgp_started = True
            started = start_daemon(self.user_state,
                                   {"PEERLAB_GATEWAY_URL": self.gateway_url, "PEERLAB_TOKEN": self.token})
            self.summary["daemon_pid"] = started["daemon_pid"]

            def established() -> dict[str, Any] | None:
                status = self.control("status")
                states = {s["rs"]: s["state"] for s in status["sessions"]}
                return status if all(states.get(rs) == "established" for rs in rs_names) else None

            status = poll(established, timeout=SESSION_TIMEOUT, what="BGP sessions Established at "
                          + " and ".join(rs_names), interval=0.1)
            self.summary["sessions"] = {s["rs"]: s["state"] for s in status["sessions"]}
            return f"ExaBGP pid {status['pid']}: " + ", ".join(f"{rs} established" for rs in rs_names)

        def announce() -> str:
            from peerlab_tui.core.bgp import Announcement

            prefix = self.summary["lease"]["prefix"]
            sent = time.monotonic()
            self.control("announce", announcement=Announcement(prefix=prefix).model_dump(mode="json"))

            def accepted() -> list[Any] | None:
                rows = [v for v in self.verdicts() if v.prefix == prefix]
                states = {v.rs: v.state for v in rows}
                if any(states.get(rs) == "filtered" for rs in rs_names):
                    bad = [f"{v.rs}: {v.reason} (rule {v.rule})" for v in rows if v.state == "filtered"]
                    raise ExternalProgramError(f"{prefix} was filtered: {'; '.join(bad)}")
                return rows if all(states.get(rs) == "accepted" for rs in rs_names) else None

            rows = poll(accepted, timeout=VERDICT_TIMEOUT, what=f"{prefix} accepted at every route server")
            after = time.monotonic() - sent
            self.summary["routes"] = [v.model_dump(mode="json") for v in rows]
            self.summary["accepted_after_seconds"] = round(after, 3)
            where = " and ".join(sorted(v.rs for v in rows))
            return f"{prefix} ACCEPTED at {where} ({after:.2f} s after announce)"

        def received() -> str:
            wanted = {str(r.prefix) for r in upstream.routes}

            def complete() -> list[dict[str, Any]] | None:
                routes: list[dict[str, Any]] = self.control("received")
                per_rs = {rs: {r["prefix"] for r in routes if r["rs"] == rs} for rs in rs_names}
                return routes if all(per_rs[rs] >= wanted for rs in rs_names) else None

            routes = poll(complete, timeout=VERDICT_TIMEOUT,
                          what="the upstream's routes from every route server")
            self.summary["received"] = routes
            first = [f"{r['prefix']} [{' '.join(map(str, r['as_path']))}]" for r in routes
                     if r["rs"] == rs_names[0]]
            return f"{len(routes)} routes; from {rs_names[0]}: " + ", ".join(first)

        def ping() -> str:
            from peerlab_tui.core import netns as ns
            from peerlab_tui.core.tunnel.manager import parse_ping_avg

            lease_net = ipaddress.IPv6Network(self.summary["lease"]["prefix"])
            source = str(lease_net[1])
            target = str(upstream.address)
            ifname = self.summary["tunnel"][rs_names[0]]
            ns.add_address("lo", f"{source}/128", netns=self.netns)
            # What a router would do with the received routes: the upstream's prefixes via the tunnel.
            for route in upstream.routes:
                ns.run(["ip", "-6", "route", "replace", str(route.prefix), "dev", ifname], netns=self.netns)

            def answered() -> float | None:
                argv = ["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", source, target]
                out = ns.run(argv, netns=self.netns, check=False, timeout=15)
                return parse_ping_avg(out.stdout)

            rtt = poll(answered, timeout=20, what=f"a ping from {source} to {target}", interval=0.2)
            self.summary["ping"] = {"from": source, "to": target, "via": rs_names[0], "rtt_ms": rtt}
            return f"{source} -> {target} over the tunnel to {rs_names[0]}: {rtt:.2f} ms"

        def withdraw() -> str:
            prefix = self.summary["lease"]["prefix"]
            sent = time.monotonic()
            self.control("withdraw", prefix=prefix)
            poll(lambda: not any(v.prefix == prefix for v in self.verdicts()), timeout=VERDICT_TIMEOUT,
                 what=f"{prefix} gone from the looking glass")
            after = time.monotonic() - sent
            self.summary["withdrawn_after_seconds"] = round(after, 3)
            return f"{prefix} gone from every route server ({after:.2f} s after withdraw)"

        self.step("lab up", lab_up)
        self.step(f"lab user add {USER} --netns", user_add)
        self.step("asn + lease request", lease)
        self.step("tunnel up (WireGuard)", tunnel_up)
        self.step("bgp up (ExaBGP, sessions)", bgp_up)
        self.step("announce -> routes (looking glass)", announce)
        self.step("received (from the upstream)", received)
        self.step("ping upstream from the lease", ping)
        self.step("withdraw -> routes", withdraw)
        return self.summary

    # --- cleanup -------------------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """``bgp down``, ``tunnel down``, ``lab down`` and the temporary directory; every part is tried even
        when an earlier one fails. Returns the problems met (empty when everything went)."""
        problems: list[str] = []
        started = time.monotonic()
        if self.bgp_started:
            try:
                self._bgp_down()
            except Exception as exc:  # keep going: the lab must go whatever happens
                problems.append(f"bgp down: {exc}")
        if self.tunnel_started:
            try:
                self._tunnel_down()
            except Exception as exc:
                problems.append(f"tunnel down: {exc}")
        if self.lab is not None:
            try:
                foreign = self.lab.down().get("not_ours_left_running") or {}
                if foreign:
                    problems.append(f"lab down: processes left running in its namespaces: {foreign}")
            except Exception as exc:
                problems.append(f"lab down: {exc}")
        problems += self._leftovers()
        shutil.rmtree(self.workdir, ignore_errors=True)
        status = "done" if not problems else "with problems: " + "; ".join(problems)
        record = StepRecord(len(self.steps) + 1, "clean up (bgp, tunnel, lab down)",
                            time.monotonic() - started, not problems, status)
        self.steps.append(record)
        self.echo(f"[{record.number:2d}] {record.name:<34} {record.seconds:6.2f} s  {status}")
        return problems

    def _bgp_down(self) -> None:
        from peerlab_tui._cli.bgp import stop_daemon
        from peerlab_tui.core.bgp.daemon import daemon_pid

        pid = daemon_pid(self.user_state) or self.summary.get("daemon_pid")
        try:
            stop_daemon(self.user_state)
        except PeerlabError:
            # Not answering: stop it by its PID (it stops ExaBGP on SIGTERM), then for sure.
            if pid is not None:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), sig)
                    deadline = time.monotonic() + 15
                    while is_running(int(pid)) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if not is_running(int(pid)):
                        break

    def _leftovers(self) -> list[str]:
        """What clean-up should have removed but is still there: the daemon, the tunnel interfaces."""
        left: list[str] = []
        pid = self.summary.get("daemon_pid")
        if pid is not None and is_running(int(pid)):
            left.append(f"the BGP daemon (pid {pid}) still runs")
        wg = Path("/var/run/wireguard")
        for ifname in (self.summary.get("tunnel") or {}).values():
            if (wg / f"{ifname}.sock").exists():
                left.append(f"the tunnel interface {ifname} is still up")
        return left

    def _tunnel_down(self) -> None:
        from peerlab_tui.core.tunnel import TunnelManager

        async def go() -> None:
            async with self.client() as gw:
                await TunnelManager(gw, self.user_state, self.netns).down()

        try:
            run_async(go())
        except PeerlabError:
            # The gateway is gone: remove the interfaces anyway (the lab's database goes with the lab).
            run_async(TunnelManager(None, self.user_state, self.netns).down(keep_registration=True))

    def usage(self) -> str:
        """How to use the lab ``--keep`` left running."""
        lab_args = f"--prefix {self.prefix} --state-dir {self.workdir / 'lab'}"
        token_file = self.workdir / "lab" / "users" / f"{USER}.token"
        prefix = self.summary.get("lease", {}).get("prefix", "PREFIX")
        return "\n".join([
            "",
            f"The lab is still up (prefix {self.prefix}); the demo user's tunnel and BGP daemon still run.",
            "Use it as the demo user:",
            f"  export PEERLAB_GATEWAY_URL={self.gateway_url}",
            f"  export PEERLAB_TOKEN=$(cat {token_file})",
            f"  export PEERLAB_STATE_DIR={self.user_state}",
            "  peerlab-tui bgp status",
            f"  peerlab-tui announce {prefix} --community 64500:1 --med 10",
            "  peerlab-tui routes",
            "  peerlab-tui received",
            f"  peerlab-tui withdraw {prefix}",
            f"  ip netns exec {self.netns} ping -6 -I {self.summary.get('ping', {}).get('from', '')} "
            f"{self.lab.topo.upstream.address if self.lab else ''}",
            "Add users:  peerlab-tui lab user add NAME --netns " + lab_args,
            "Tear down:  peerlab-tui bgp down && peerlab-tui tunnel down && peerlab-tui lab down " + lab_args
            + f" && rm -rf {self.workdir}",
        ])


def full_demo(hours: int, keep: bool, as_json: bool) -> None:
    """Run the whole slice on a fresh embedded lab, then clean up (unless ``keep``)."""
    if os.geteuid() != 0:
        raise DemoError("prerequisites", PeerlabError(
            "the full demo builds network namespaces and needs root (run it with sudo, or try "
            "'peerlab-tui demo --gateway-only')"))

    def echo(text: str) -> None:
        if not as_json:
            click.echo(text)

    demo = SliceDemo(hours=hours, keep=keep, echo=echo)
    echo(f"PeerLab demo: the whole slice on a throwaway lab (prefix {demo.prefix}, state {demo.workdir})")
    started = time.monotonic()
    failure: DemoError | None = None
    completed = False
    problems: list[str] = []
    try:
        demo.run()
        completed = True
    except DemoError as exc:
        failure = exc
    finally:
        # Interrupted or failed: always clean up; --keep only keeps a lab that fully worked.
        if not (completed and keep):
            problems = demo.cleanup()
    summary = {
        "ok": failure is None and not problems,
        **demo.summary,
        "kept": completed and keep,
        "steps": [{"step": s.number, "name": s.name, "seconds": round(s.seconds, 3), "ok": s.ok,
                   "detail": s.detail} for s in demo.steps],
        "total_seconds": round(time.monotonic() - started, 3),
        "cleanup_problems": problems,
    }
    if failure is not None:
        summary["failed_step"] = failure.step
        summary["error"] = failure.message
        if as_json:
            emit_json(summary)
        click.echo(f"error: {failure.message}", err=True)
        sys.exit(failure.exit_code)
    if as_json:
        emit_json(summary)
    else:
        echo(f"demo complete in {summary['total_seconds']:.1f} s"
             + ("" if not problems else f", but clean-up left things behind: {'; '.join(problems)}"))
        if keep:
            echo(demo.usage())
    if problems:
        # The slice worked but the machine is not clean: say what was left and fail.
        click.echo(f"error: clean-up had problems, left behind: {'; '.join(problems)}", err=True)
        sys.exit(1)


@click.command()
@click.option("--gateway-only", is_flag=True,
              help="Only the gateway: a throwaway gateway, a user, an ASN and a lease (no root needed).")
@click.option("--keep", is_flag=True, help="Leave the lab (and the demo user's tunnel and BGP daemon) up.")
@click.option("--hours", type=click.IntRange(1, 24), default=2, show_default=True, help="Lease duration.")
@json_option
@handle_errors
def demo(gateway_only: bool, keep: bool, hours: int, as_json: bool) -> None:
    """Run the whole slice on a throwaway embedded lab (root), printing each step; then clean up.

    lab up, a user with its own namespace, an ASN and a lease, the WireGuard tunnel and BGP sessions to both
    route servers, announce the lease, see it accepted at rs1 and rs2, the routes received from the
    upstream, a ping over the tunnel, withdraw, and everything removed.
    """
    if gateway_only:
        if keep:
            raise InputError("--keep needs the full demo (without --gateway-only)")
        run_gateway_only(hours, as_json)
        return
    full_demo(hours, keep, as_json)
