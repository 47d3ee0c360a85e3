"""The route-server policy agent: gateway mappings in, BIRD configuration and route verdicts out.

Each step polls ``/service/mappings`` (ETag, so unchanged polls are cheap) and ``/service/tunnels``; on a
change it renders the complete configuration (:func:`lab.rsagent.render.render_plan`), writes it atomically
only when it differs, validates it with ``bird -p`` BEFORE applying, applies it through the control socket
(``configure``; user channels have ``import table on``, so no session is reset) and re-runs the import filter
of the sessions whose leases changed (``reload in``). A configuration BIRD refuses is kept as
``bird.conf.rejected`` and the running one stays. Then (and every ``report_interval`` seconds, only when
something changed) it reads every received route from each session's import table, explains it with the
Python policy and posts the full set to the gateway.

:meth:`Agent.run` adds two cheap loops beside the gateway poll: a route watch (every ``watch_interval``,
default 0.2 s, one ``show protocols all "u*"`` whose counters move with every UPDATE; routes are re-read and
posted only when they moved), so a verdict reaches the looking glass a fraction of a second after BIRD
decided it; and a WireGuard reconcile (every ``wg_reconcile_interval``) against the device's ACTUAL peers,
so a restarted wireguard-go gets its peers back without restarting the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lab.bird import BirdConfigError, BirdControl, BirdError, validate_config
from lab.rsagent.policy import RouteFacts, evaluate
from lab.rsagent.render import CHANNEL, USER_PREFIX, Plan, build_plan, render_plan
from lab.rsagent.settings import RouteServerSettings
from peerlab_tui.core.errors import PeerlabError
from peerlab_tui.core.models import Mapping, MappingList, ReportedRoute, TunnelPeer, TunnelPeerList

log = logging.getLogger(__name__)

CONFIG_FILE = "bird.conf"
REJECTED_FILE = "bird.conf.rejected"
STATUS_FILE = "status.json"
RELOAD_ALL_THRESHOLD = 20  # more changed sessions than this: one "reload in all"
SETTLE_SECONDS = 3.0  # after an apply BIRD re-evaluates routes in the background: watch without the gate


class PeerSync(Protocol):
    """Keeps the route server's WireGuard peers equal to a list of (public key, allowed IPs)."""

    def sync(self, peers: list[tuple[str, list[str]]]) -> None:
        """Set the device's peers to exactly these."""


class NoopPeerSync:
    """Used when the route server has no WireGuard interface to manage (tests, plain veth labs)."""

    def sync(self, peers: list[tuple[str, list[str]]]) -> None:
        """Do nothing (but say so at debug level)."""
        log.debug("no WireGuard peer sync configured; %d peers not applied", len(peers))


class GatewaySource(Protocol):
    """What the agent needs from the gateway (the service API)."""

    async def mappings(self, etag: str | None) -> tuple[MappingList | None, str | None]:
        """``GET /service/mappings`` with If-None-Match: (None, etag) when unchanged."""

    async def tunnels(self) -> TunnelPeerList:
        """``GET /service/tunnels``."""

    async def report_routes(self, rs_name: str, routes: list[ReportedRoute]) -> None:
        """``POST /service/rs/{name}/routes``."""


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class ServiceClientSource:
    """Adapts ``peerlab_tui.core.gateway.ServiceClient`` (sync or async methods) to :class:`GatewaySource`."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def mappings(self, etag: str | None) -> tuple[MappingList | None, str | None]:
        """Delegate to ``ServiceClient.mappings``."""
        result = await _maybe_await(self.client.mappings(etag))
        return result[0], result[1]

    async def tunnels(self) -> TunnelPeerList:
        """Delegate to ``ServiceClient.tunnels``."""
        result: TunnelPeerList = await _maybe_await(self.client.tunnels())
        return result

    async def report_routes(self, rs_name: str, routes: list[ReportedRoute]) -> None:
        """Delegate to ``ServiceClient.report_routes``."""
        await _maybe_await(self.client.report_routes(rs_name, routes))


@dataclass
class StepResult:
    """What one step did."""

    inputs_changed: bool = False
    config_written: bool = False
    applied: bool = False
    rejected: str | None = None  # BIRD's message when the new configuration was refused
    reloaded: list[str] = field(default_factory=list)
    reported: bool = False
    routes: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase of the apply


class Agent:
    """One route server's agent. Drive it with :meth:`step` (tests) or :meth:`run` (the daemon)."""

    def __init__(self, settings: RouteServerSettings, source: GatewaySource, control: BirdControl,
                 config_dir: Path | str, *, peer_sync: PeerSync | None = None, interval: float = 1.0,
                 report_interval: float = 3.0, bird_binary: str = "bird", watch_interval: float = 0.2,
                 wg_reconcile_interval: float = 2.0) -> None:
        self.settings = settings
        self.source = source
        self.control = control
        self.config_dir = Path(config_dir)
        self.peer_sync: PeerSync = peer_sync or NoopPeerSync()
        self.interval = interval
        self.report_interval = report_interval
        self.bird_binary = bird_binary
        self.etag: str | None = None
        self.mappings: list[Mapping] = []
        self.tunnels: list[TunnelPeer] = []
        self.have_inputs = False
        self.applied_plan: Plan | None = None
        self.applied_text: str | None = None
        # The plan of the latest inputs: WireGuard follows it even while BIRD cannot apply it.
        self.desired_plan: Plan | None = None
        # True while the latest inputs have not reached BIRD (BIRD unreachable): retried at every step.
        self.pending = False
        # Failures by source; last_error (status.json) is the first set. apply_error is sticky until an apply
        # succeeds (a refused configuration stays a problem until the inputs change).
        self.apply_error: str | None = None
        self.wg_error: str | None = None
        self.step_error: str | None = None
        self._status_written: tuple[str | None, str | None] | None = None
        self.last_report: list[ReportedRoute] | None = None
        self._next_report = 0.0
        self._wg_applied: tuple[tuple[str, tuple[str, ...]], ...] | None = None
        self._mismatches: set[tuple[str, str, str]] = set()
        self.watch_interval = watch_interval
        self.wg_reconcile_interval = wg_reconcile_interval
        self._fingerprints: dict[str, str] | None = None
        self._settle_until = 0.0
        self._report_lock = asyncio.Lock()
        self._next_reconcile = 0.0

    @property
    def last_error(self) -> str | None:
        """The error status.json reports (None when the route server runs the latest inputs)."""
        return self.apply_error or self.wg_error or self.step_error

    @property
    def config_path(self) -> Path:
        """The live configuration file (BIRD runs with ``-c`` on it)."""
        return self.config_dir / CONFIG_FILE

    @property
    def rejected_path(self) -> Path:
        """Where a configuration BIRD refused is kept for inspection."""
        return self.config_dir / REJECTED_FILE

    # --- inputs -------------------------------------------------------------------------------------------

    async def poll(self) -> bool:
        """Fetch mappings (conditional) and tunnels; True when either changed."""
        changed = False
        mapping_list, etag = await self.source.mappings(self.etag)
        if mapping_list is not None:
            new = list(mapping_list.mappings)
            changed |= new != self.mappings or not self.have_inputs
            self.mappings = new
        self.etag = etag
        tunnels = list((await self.source.tunnels()).peers)
        changed |= tunnels != self.tunnels
        self.tunnels = tunnels
        self.have_inputs = True
        return changed

    # --- apply --------------------------------------------------------------------------------------------

    def _write_atomic(self, path: Path, text: str) -> None:
        # 0600: the configuration may hold BGP session passwords.
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def apply(self, result: StepResult | None = None) -> StepResult:
        """Render, write if different, validate, configure, reload changed sessions, sync WireGuard peers."""
        result = result or StepResult()
        t0 = time.perf_counter()
        plan = build_plan(self.settings, self.mappings, self.tunnels)
        text = render_plan(plan)
        result.timings["render"] = time.perf_counter() - t0
        # WireGuard first and whatever BIRD says: a tunnel key must not wait for BIRD (nor for a filter
        # BIRD refuses); the peers' allowed IPs are the user's own addresses and leases.
        self.desired_plan = plan
        self._sync_wireguard(plan)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        try:
            current = self.config_path.read_text()
        except FileNotFoundError:
            current = None
        if text != current:
            candidate = self.config_dir / f".{CONFIG_FILE}.candidate"
            t0 = time.perf_counter()
            self._write_atomic(candidate, text)
            try:
                validate_config(candidate, bird_binary=self.bird_binary)
            except BirdConfigError as exc:
                os.replace(candidate, self.rejected_path)
                return self._rejected(result, f"bird -p refused the new configuration: {exc}")
            finally:
                result.timings["validate"] = time.perf_counter() - t0
            os.replace(candidate, self.config_path)
            result.config_written = True
        elif self.applied_text == text:
            # BIRD already runs this configuration (a key rotation changes no BIRD text).
            self.applied_plan = plan
            self._apply_succeeded()
            return result
        t0 = time.perf_counter()
        try:
            message = self.control.configure()
        except BirdConfigError as exc:
            # bird -p accepted what the daemon refused (e.g. a resource at runtime): put the good file back.
            self._write_atomic(self.rejected_path, text)
            if current is not None:
                self._write_atomic(self.config_path, current)
            return self._rejected(result, f"BIRD refused the new configuration: {exc}")
        result.timings["configure"] = time.perf_counter() - t0
        log.info("applied configuration (%d sessions): %s", len(plan.sessions), message)
        result.applied = True
        t0 = time.perf_counter()
        result.reloaded = self._reload_changed(self.applied_plan, plan)
        result.timings["reload"] = time.perf_counter() - t0
        self.applied_plan, self.applied_text = plan, text
        self._settle_until = time.monotonic() + SETTLE_SECONDS
        self._apply_succeeded()
        return result

    def _apply_succeeded(self) -> None:
        self.pending = False
        self.apply_error = None
        self.write_status()

    def _rejected(self, result: StepResult, message: str) -> StepResult:
        log.error("%s (kept the running configuration; see %s)", message, self.rejected_path)
        # Not retried: the same inputs give the same text, which BIRD refuses again. A new input retries.
        self.pending = False
        self.apply_error = message
        result.rejected = message
        self.write_status(force=True)
        return result

    def write_status(self, *, force: bool = True) -> None:
        """``DIR/status.json``: what runs, whether the latest inputs are applied, and the last error (read by
        ``lab status``). Without ``force`` only written when the error or the running config changed."""
        plan = self.applied_plan
        digest = hashlib.sha256(self.applied_text.encode()).hexdigest() if self.applied_text else None
        key = (self.last_error, digest)
        if not force and key == self._status_written:
            return
        self._status_written = key
        status = {
            "rs": self.settings.name,
            "sessions": len(plan.sessions) if plan else 0,
            "roas": len(plan.policy.roas) if plan else 0,
            "config_sha256": digest,
            "last_error": self.last_error,
            "pending_apply": self.pending,
            "rejected_config": str(self.rejected_path) if self.apply_error and self.rejected_path.exists()
            else None,
            "updated": time.time(),
        }
        self._write_atomic(self.config_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")

    def _reload_changed(self, old: Plan | None, new: Plan) -> list[str]:
        """``reload in`` for sessions whose leases changed (the ROA tables changed, not the filter text).

        BIRD would also reload them by itself after its ROA settle time; doing it now makes the change
        effective at once. The import table makes this a local re-evaluation: no route refresh, no reset.
        """
        if old is None:
            return []
        before = {s.protocol: s.policy for s in old.sessions}
        changed = [s.protocol for s in new.sessions
                   if s.protocol in before and before[s.protocol] != s.policy]
        if len(changed) > RELOAD_ALL_THRESHOLD:
            # One command instead of hundreds of round trips; import tables make it cheap.
            try:
                self.control.reload_in("all")
            except BirdError as exc:
                log.warning("reload in all: %s", exc)
            return changed
        reloaded = []
        for protocol in changed:
            try:
                self.control.reload_in(protocol)
                reloaded.append(protocol)
            except BirdError as exc:
                log.debug("reload in %s: %s", protocol, exc)
        return reloaded

    def _sync_wireguard(self, plan: Plan) -> None:
        if plan.wireguard_peers == self._wg_applied:
            return
        try:
            self.peer_sync.sync([(key, list(ips)) for key, ips in plan.wireguard_peers])
            self._wg_applied = plan.wireguard_peers
            self.wg_error = None
        except (PeerlabError, OSError) as exc:
            # Retried by the reconcile loop (and at the next step's apply, if any).
            self.wg_error = f"WireGuard peer sync failed: {exc}"
            log.error("%s", self.wg_error)

    def reconcile_wireguard(self) -> bool:
        """Re-check the device's ACTUAL peers against the LATEST plan and repair any difference.

        The latest plan, not the one BIRD runs: a key registered while BIRD was down still reaches WireGuard.
        A wireguard-go restarted under the agent (a crash, ``lab up`` repairing it) comes back without peers;
        this puts them back. Cheap: one UAPI ``get`` when nothing differs. True when it ran without error.
        """
        plan = self.desired_plan or self.applied_plan
        if plan is None:
            return False
        had_error = self.wg_error
        try:
            self.peer_sync.sync([(key, list(ips)) for key, ips in plan.wireguard_peers])
        except (PeerlabError, OSError) as exc:
            log.warning("WireGuard reconcile failed (retried): %s", exc)
            self.wg_error = f"WireGuard peer sync failed: {exc}"
            if had_error != self.wg_error:
                self.write_status(force=False)
            return False
        self._wg_applied = plan.wireguard_peers
        self.wg_error = None
        if had_error:
            self.write_status(force=False)
        return True

    # --- report -------------------------------------------------------------------------------------------

    def collect_routes(self) -> list[ReportedRoute]:
        """Every route received on every established user session, with BIRD's state and Python's reason."""
        plan = self.applied_plan
        if plan is None:
            return []
        status = {p.name: p for p in self.control.show_protocols()}
        routes: list[ReportedRoute] = []
        seen: set[tuple[str, str, str]] = set()
        for sess in plan.sessions:
            st = status.get(sess.protocol)
            if st is None or st.state != "up":
                continue
            try:
                received = self.control.show_route(import_table=f"{sess.protocol}.{CHANNEL}")
                accepted = {r.prefix for r in self.control.show_route(protocol=sess.protocol)}
            except BirdError as exc:
                log.debug("cannot read routes of %s: %s", sess.protocol, exc)
                continue
            for route in received:
                verdict = evaluate(RouteFacts.from_route(route), plan.policy, sess.policy)
                bird_accepted = route.prefix in accepted
                reason = verdict.reason
                rule = verdict.rule
                if bird_accepted != verdict.accepted:
                    if not bird_accepted and len(accepted) >= self.settings.max_prefix:
                        reason = f"import limit of {self.settings.max_prefix} routes reached"
                        rule = "import_limit"
                    else:
                        key = (sess.protocol, route.prefix, "accepted" if bird_accepted else "filtered")
                        seen.add(key)
                        # Right after a change BIRD may still be reloading; twice in a row is a bug.
                        level = logging.ERROR if key in self._mismatches else logging.INFO
                        log.log(level, "POLICY MISMATCH (bug): BIRD %s %s from %s but the Python policy says "
                                "%s (%s)", "accepted" if bird_accepted else "filtered", route.prefix,
                                sess.protocol, verdict.state, verdict.reason)
                        reason = None if bird_accepted else "filtered by the route server"
                        rule = None
                routes.append(ReportedRoute(
                    rs=self.settings.name, user_hash=sess.user_hash, prefix=route.prefix,
                    as_path=route.as_path, communities=route.communities,
                    large_communities=route.large_communities, med=route.med,
                    state="accepted" if bird_accepted else "filtered",
                    reason=None if bird_accepted else reason,
                    rule=None if bird_accepted else rule,
                ))
        self._mismatches = seen
        routes.sort(key=lambda r: (r.user_hash, r.prefix, r.as_path))
        return routes

    async def report(self, *, force: bool = False) -> bool:
        """Post the full route set when it changed since the last successful post (or when forced)."""
        async with self._report_lock:  # the watch and the step never post out of order
            routes = self.collect_routes()
            if not force and routes == self.last_report:
                return False
            await self.source.report_routes(self.settings.name, routes)
            self.last_report = routes
            log.info("reported %d routes", len(routes))
            return True

    async def watch(self) -> bool:
        """One tick of the route watch: re-read and post the routes only when BIRD's counters moved.

        Right after an apply (BIRD re-runs import filters in the background) every tick re-reads. True when
        a report was posted.
        """
        if self.applied_plan is None:
            return False
        fingerprints = self.control.protocol_fingerprints(f"{USER_PREFIX}*")
        settling = time.monotonic() < self._settle_until
        if fingerprints == self._fingerprints and not settling:
            return False
        posted = await self.report()
        self._fingerprints = fingerprints  # only once the routes behind them were posted
        return posted

    # --- loop ---------------------------------------------------------------------------------------------

    async def step(self) -> StepResult:
        """One poll, apply-if-changed, report-if-due."""
        result = StepResult()
        step_error: str | None = None
        try:
            result.inputs_changed = await self.poll()
        except PeerlabError as exc:
            result.error = step_error = f"gateway poll failed: {exc}"
            log.warning("%s (keeping the running configuration)", result.error)
        if result.inputs_changed:
            self.pending = True
        if self.have_inputs and (self.pending or self.applied_plan is None):
            try:
                self.apply(result)
            except (PeerlabError, OSError) as exc:
                # BIRD unreachable (down, restarting), bird -p missing, a full disk: the latest inputs stay
                # pending and are retried at every step until they apply.
                self.pending = True
                result.error = self.apply_error = f"apply failed: {exc}"
                log.error("%s (retried at the next step)", result.error)
        now = time.monotonic()
        if self.applied_plan is not None and (result.applied or now >= self._next_report):
            self._next_report = now + self.report_interval
            try:
                result.reported = await self.report()
                result.routes = len(self.last_report or [])
            except (PeerlabError, OSError) as exc:
                result.error = step_error = f"route report failed: {exc}"
                log.warning("%s", result.error)
        self.step_error = step_error
        self.write_status(force=False)
        return result

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> StepResult:
        """Step every ``interval`` seconds until ``stop`` is set (or once); meanwhile watch the routes every
        ``watch_interval`` and reconcile WireGuard every ``wg_reconcile_interval``."""
        if once:
            return await self.step()
        stop = stop or asyncio.Event()
        watcher = asyncio.create_task(self._watch_loop(stop), name="rsagent-watch")
        try:
            while True:
                started = time.monotonic()
                result = await self.step()
                if stop.is_set():
                    return result
                delay = max(0.0, self.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return result
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.watch()
            except (PeerlabError, OSError) as exc:
                log.debug("route watch: %s", exc)
            if started >= self._next_reconcile and self.applied_plan is not None:
                self._next_reconcile = started + self.wg_reconcile_interval
                await asyncio.to_thread(self.reconcile_wireguard)
            # Scale back when the watch itself gets expensive (thousands of sessions): at most ~20% busy.
            spent = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(self.watch_interval, 4 * spent))


def describe(plan: Plan | None) -> dict[str, Sequence[str] | int]:
    """A short summary of a plan (for ``--once`` output)."""
    if plan is None:
        return {"sessions": 0}
    return {"sessions": len(plan.sessions), "protocols": [s.protocol for s in plan.sessions],
            "roas": len(plan.policy.roas)}
