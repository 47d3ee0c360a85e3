"""Errors of the BGP speaker: every one is a :class:`PeerlabError` with its CLI exit code."""

from __future__ import annotations

from peerlab_tui.core.errors import ExitCode, InputError, PeerlabError


class BgpError(PeerlabError):
    """Base class of the speaker's errors."""


class SpeakerNotRunningError(BgpError):
    """The speaker (ExaBGP, or the daemon's control socket) is not running or not reachable."""

    exit_code = ExitCode.UNREACHABLE


class ExaBgpError(BgpError):
    """ExaBGP failed: it would not start, its configuration was rejected, or it exited."""

    exit_code = ExitCode.EXTERNAL


class CommandRejectedError(ExaBgpError):
    """ExaBGP answered ``error`` to a command (its log in the state dir says why)."""

    def __init__(self, message: str, *, command: str) -> None:
        super().__init__(message)
        self.command = command


class CommandTimeoutError(ExaBgpError):
    """ExaBGP did not acknowledge a command in time."""

    def __init__(self, message: str, *, command: str) -> None:
        super().__init__(message)
        self.command = command


class SafetyError(BgpError):
    """A client-side safety rule refused an announcement before anything was sent.

    ``rule`` names the rule (``lease``, ``more-specific``, ``prepend``, ``as-path``, ``communities``,
    ``large-communities``, ``malformed``, ``rate-limit``, ``route-server``); the message lists the allowed
    values.
    """

    exit_code = ExitCode.REFUSED

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"refused by rule {rule!r}: {message}")
        self.rule = rule


class MalformedError(SafetyError, InputError):
    """A malformed value (prefix, community, MED, next hop) or an IPv4 prefix: bad input (exit 2), refused
    before anything is sent, with the rule ``malformed``."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__("malformed", message)


class UnknownRouteServerError(SafetyError):
    """A route server name that the speaker has no neighbor for (exit 6, rule ``route-server``)."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, message: str) -> None:
        super().__init__("route-server", message)


class NotAnnouncedError(BgpError):
    """A withdrawal of a prefix that is not announced (on those route servers): nothing was sent."""

    exit_code = ExitCode.NOT_FOUND
