"""The long-running user side: the WireGuard tunnel, the BGP speaker and the lease refresh, in one object.

``peerlab-tui bgp serve`` (the daemon ``bgp up`` starts) hosts a :class:`UserSide`; the TUI will host one
in-process. On :meth:`UserSide.start` it brings the tunnel up when none is recorded in the state dir (and
remembers, in ``STATE_DIR/bgp/tunnel-owner.json``, that it created it), builds the speaker's configuration
from the gateway's tunnel answer, starts the :class:`Speaker` and refreshes the leases from the gateway. On
:meth:`UserSide.stop` it stops the speaker and takes down the tunnel only when it created it: a tunnel the
user brought up with ``tunnel up`` stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from peerlab_tui.core.bgp.errors import SafetyError, SpeakerNotRunningError
from peerlab_tui.core.bgp.model import Announcement, Preview, SpeakerConfig
from peerlab_tui.core.bgp.safety import SafetySettings
from peerlab_tui.core.bgp.speaker import Speaker
from peerlab_tui.core.errors import ConfigError, NotFoundError, PeerlabError
from peerlab_tui.core.gateway import GatewayClient
from peerlab_tui.core.models import Lease
from peerlab_tui.core.tunnel import TunnelManager

log = logging.getLogger(__name__)

OWNER_FILE = "tunnel-owner.json"
REACHABLE_TIMEOUT = 15.0


def bgp_dir(state_dir: Path) -> Path:
    """Where the BGP side keeps its files inside the user state directory."""
    return Path(state_dir) / "bgp"


def release_tunnel_ownership(state_dir: Path) -> None:
    """Forget that ``bgp up`` created the tunnel: the user brought it up themselves (``tunnel up``), so
    ``bgp down`` must leave it up."""
    (bgp_dir(state_dir) / OWNER_FILE).unlink(missing_ok=True)


def tunnel_netns(state_dir: Path) -> tuple[bool, str | None]:
    """(whether a tunnel is recorded in ``state_dir``, the namespace it was built in)."""
    records = TunnelManager(None, state_dir).load_state()
    return (bool(records), records[0].netns if records else None)


def check_tunnel_netns(state_dir: Path, netns: str | None) -> None:
    """Refuse to peer from ``netns`` when the recorded tunnel lives in another namespace (the sessions could
    never come up there)."""
    recorded, where = tunnel_netns(state_dir)
    if recorded and where != netns:
        raise ConfigError(f"the tunnel is up in {_ns(where)} but BGP would run in {_ns(netns)}: the sessions "
                          f"could never come up; use --netns {where or '(none)'} (the default), or take the "
                          "tunnel down first ('peerlab-tui tunnel down')")


def _ns(name: str | None) -> str:
    return f"namespace {name!r}" if name else "the host namespace"


class UserSideSpec(BaseModel):
    """What a user side runs (written by ``bgp up`` to ``STATE_DIR/bgp/daemon.json``; no secrets in it)."""

    model_config = ConfigDict(extra="forbid")

    speaker: SpeakerConfig | None = None  # None: built from the gateway's tunnel answer at start
    asn: int | None = None
    netns: str | None = None
    hold_time: int = 90
    tunnel: bool = True  # bring the WireGuard tunnel up at start when none is recorded
    leases: list[Lease] = Field(default_factory=list)
    safety: dict[str, float | int | None] = Field(default_factory=dict)
    gateway_url: str | None = None
    lease_refresh_seconds: float = 60.0

    def safety_settings(self) -> SafetySettings:
        """The :class:`SafetySettings` of this spec."""
        return dataclasses.replace(SafetySettings(), **self.safety)  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        """The options a user chose (``bgp up`` compares them with a running daemon's)."""
        netns = self.speaker.netns if self.speaker is not None else self.netns
        hold = self.speaker.hold_time if self.speaker is not None else self.hold_time
        return {"netns": netns, "hold_time": hold, "tunnel": self.tunnel, **self.safety}


class UserSide:
    """The tunnel, the speaker and the lease refresh of one user (one state dir), in one process.

    ``gateway`` (an open :class:`GatewayClient`) brings the tunnel up and down and refreshes the leases; it
    may be None when the spec already carries the speaker configuration and no tunnel is to be built.
    ``speaker_options`` go to :class:`Speaker` (timeouts, clock, exabgp path).
    """

    def __init__(self, state_dir: Path, spec: UserSideSpec, *, gateway: GatewayClient | None = None,
                 **speaker_options: Any) -> None:
        self.state_dir = Path(state_dir)
        self.spec = spec
        self.dir = bgp_dir(self.state_dir)
        self.owner_path = self.dir / OWNER_FILE
        self.netns = spec.speaker.netns if spec.speaker is not None else spec.netns
        self.tunnel = TunnelManager(gateway, self.state_dir, self.netns)
        self.tunnel_created = False  # this user side (bgp up) brought the tunnel up: it takes it down
        self._gateway = gateway
        self._speaker_options = speaker_options
        self._speaker: Speaker | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._stopped: dict[str, Any] | None = None

    @property
    def speaker(self) -> Speaker:
        """The running speaker (:class:`SpeakerNotRunningError` before :meth:`start`)."""
        if self._speaker is None:
            raise SpeakerNotRunningError("the user side is not started")
        return self._speaker

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring the tunnel up if needed, then start the speaker and the lease refresh."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = None
        recorded, _ = tunnel_netns(self.state_dir)
        if recorded:
            check_tunnel_netns(self.state_dir, self.netns)
            # A tunnel recorded by an earlier user side that crashed is still ours to take down.
            self.tunnel_created = self._owner_recorded()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.owner_path.unlink()  # stale: its tunnel is gone
            if self.spec.tunnel:
                if self._gateway is None:
                    raise ConfigError("bringing the tunnel up needs a gateway connection")
                self._write_owner()  # first: a failure half-way is still taken down by stop()
                self.tunnel_created = True
                try:
                    info = (await self.tunnel.up()).info
                    reachable = await self.tunnel.wait_reachable(timeout=REACHABLE_TIMEOUT)
                except BaseException:
                    await self._tunnel_down()
                    raise
                if not all(reachable.values()):
                    log.warning("route servers not answering over the tunnel yet: %s (BGP keeps trying)",
                                ", ".join(rs for rs, ok in reachable.items() if not ok))
        try:
            config = self.spec.speaker
            if config is None:
                if info is None:
                    if self._gateway is None:
                        raise ConfigError("the speaker configuration needs the gateway's tunnel answer")
                    try:
                        info = await self._gateway.get_tunnel()
                    except NotFoundError:
                        if not (recorded and self.spec.tunnel):
                            raise
                        # The registration is gone on the gateway but the interfaces are here: register
                        # again (the key is kept); who takes the tunnel down does not change.
                        info = (await self.tunnel.up()).info
                try:
                    config = SpeakerConfig.from_tunnel(info, asn=self.spec.asn, netns=self.netns,
                                                       hold_time=self.spec.hold_time)
                except ValueError as exc:
                    raise ConfigError(f"cannot configure the speaker from the tunnel answer: {exc}") from exc
                if not config.neighbors:
                    raise ConfigError("the gateway lists no route servers to peer with")
            self._speaker = Speaker(config, self.dir, leases=self.spec.leases,
                                    safety=self.spec.safety_settings(), **self._speaker_options)
            await self._speaker.start()
        except BaseException:
            self._speaker = None
            if self.tunnel_created:
                await self._tunnel_down()
            raise
        if self._gateway is not None:
            self._refresh = asyncio.create_task(self._refresh_loop(), name="bgp-lease-refresh")

    async def stop(self) -> dict[str, Any]:
        """Stop the speaker (its sessions close) and, when this user side created it, the tunnel.

        Idempotent; returns what was removed (``tunnel_removed``: interface names, ``tunnel_kept``: a tunnel
        the user brought up that stays up).
        """
        if self._stopped is not None:
            return self._stopped
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self._speaker is not None:
            await self._speaker.stop()
        removed: list[str] = []
        kept = False
        if self.tunnel_created:
            removed = await self._tunnel_down()
        else:
            kept = bool(self.tunnel.load_state())
        self._stopped = {"tunnel_removed": removed, "tunnel_kept": kept}
        return self._stopped

    async def _tunnel_down(self) -> list[str]:
        try:
            try:
                result = await self.tunnel.down()
            except PeerlabError as exc:  # the gateway is unreachable: the interfaces go anyway
                log.warning("could not deregister the tunnel from the gateway (%s); removing it locally", exc)
                result = await TunnelManager(None, self.state_dir, self.netns).down(keep_registration=True)
        finally:
            self.tunnel_created = False
        with contextlib.suppress(FileNotFoundError):
            self.owner_path.unlink()
        return list(result.removed)

    def _owner_recorded(self) -> bool:
        try:
            return bool(json.loads(self.owner_path.read_text()).get("created_by_bgp"))
        except (OSError, ValueError, AttributeError):
            return False

    def _write_owner(self) -> None:
        tmp = self.owner_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"created_by_bgp": True, "netns": self.netns}, fh)
        os.replace(tmp, self.owner_path)

    # --- leases ------------------------------------------------------------------------------------------

    async def refresh_leases(self) -> list[Lease]:
        """Fetch the active leases from the gateway now and hand them to the speaker."""
        if self._gateway is None:
            return self.speaker.leases
        info = await self._gateway.user_info()
        self.speaker.set_leases(info.active_leases)
        return list(info.active_leases)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.lease_refresh_seconds)
            try:
                await self.refresh_leases()
            except PeerlabError as exc:  # keep the last known leases; the schedule still follows them
                log.warning("could not refresh the leases from the gateway: %s", exc)

    async def _lease_fresh(self, exc: SafetyError) -> bool:
        """After a ``lease`` refusal: refresh the leases once (a lease just requested or renewed may not be
        known yet); True when they could be refreshed (worth checking again)."""
        if exc.rule != "lease" or self._gateway is None:
            return False
        try:
            await self.refresh_leases()
        except PeerlabError as refresh_error:
            log.warning("could not refresh the leases after a lease refusal: %s", refresh_error)
            return False
        return True

    # --- the speaker's verbs -----------------------------------------------------------------------------

    async def preview(self, ann: Announcement) -> Preview:
        """What :meth:`announce` would send (the leases are refreshed once on a ``lease`` refusal)."""
        try:
            return self.speaker.preview(ann)
        except SafetyError as exc:
            if not await self._lease_fresh(exc):
                raise
        return self.speaker.preview(ann)

    async def announce(self, ann: Announcement) -> Preview:
        """Announce (the leases are refreshed once on a ``lease`` refusal, then checked again)."""
        try:
            return await self.speaker.announce(ann)
        except SafetyError as exc:
            if not await self._lease_fresh(exc):
                raise
        return await self.speaker.announce(ann)
