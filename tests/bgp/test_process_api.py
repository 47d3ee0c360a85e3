"""The process API's error paths against a REAL ExaBGP (neighbor ::1, no peer needed): an ``error`` ack
becomes CommandRejectedError, a missing ack CommandTimeoutError, a stray ``done`` is skipped, and after each
of them the next valid command is still acknowledged as its own."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peerlab_tui.core.bgp import (
    CommandRejectedError,
    CommandTimeoutError,
    NeighborConfig,
    Speaker,
    SpeakerConfig,
)
from tests.bgp.conftest import stop_speakers
from tests.support.requirements import require_root

NEIGHBOR = "::1"
VALID = f"neighbor {NEIGHBOR} announce route 2001:db8:100::/48 next-hop ::1"
MALFORMED = f"neighbor {NEIGHBOR} announce route 2001:db8:zz::/48 next-hop ::1"

CONFIG = SpeakerConfig(asn=4200000123, router_id="10.0.0.123", neighbors=[
    NeighborConfig(name="rs1", address=NEIGHBOR, asn=64500, local_address=NEIGHBOR)])


@pytest.fixture
async def speaker(tmp_path: Path) -> AsyncIterator[Speaker]:
    """A real ExaBGP with one neighbor (::1) that never answers; 3 s ack timeout."""
    require_root()  # ExaBGP runs as root without dropping privileges (exabgp.daemon.user=root)
    sp = Speaker(CONFIG, tmp_path / "state", command_timeout=3.0)
    await sp.start()
    try:
        yield sp
    finally:
        await stop_speakers([sp])


async def test_error_ack_is_command_rejected_and_the_next_command_is_acknowledged(speaker: Speaker) -> None:
    with pytest.raises(CommandRejectedError) as info:
        await speaker.send_unchecked(MALFORMED)
    assert info.value.command == MALFORMED and info.value.exit_code == 8
    await speaker.send_unchecked(VALID)  # acknowledged with done: no exception
    assert speaker.sent_commands == [MALFORMED, VALID]
    assert speaker.stray_acks == 0


async def test_missing_ack_is_a_timeout_and_the_late_ack_is_not_taken_by_the_next_command(
        speaker: Speaker) -> None:
    pid = speaker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # ExaBGP cannot answer while stopped
    try:
        with pytest.raises(CommandTimeoutError) as info:
            await speaker.send_unchecked(MALFORMED)
        assert info.value.command == MALFORMED
    finally:
        os.kill(pid, signal.SIGCONT)
    # The late "error" of the timed-out command must not be read as the answer to this valid one.
    await speaker.send_unchecked(VALID)
    with pytest.raises(CommandRejectedError):
        await speaker.send_unchecked(MALFORMED)
    await speaker.send_unchecked(VALID)
    assert speaker.pid == pid  # the same process all along: no restart hid anything
    assert speaker.restarts == 0


async def test_a_stray_done_is_skipped(speaker: Speaker) -> None:
    # Two commands in one write: ExaBGP acks both, only one is waited for; the second "done" is stray.
    await speaker.send_unchecked(f"{VALID}\n{VALID}")
    async with asyncio.timeout(30):
        while speaker.stray_acks == 0:  # noqa: ASYNC110 - a counter, polled with a deadline
            await asyncio.sleep(0.05)
    assert speaker.stray_acks == 1
    with pytest.raises(CommandRejectedError):
        await speaker.send_unchecked(MALFORMED)  # not swallowed by the stray done
    await speaker.send_unchecked(VALID)
    assert speaker.stray_acks == 1
