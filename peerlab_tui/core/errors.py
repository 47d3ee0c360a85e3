"""The exception tree of PeerLab TUI.

Every error the core raises derives from :class:`PeerlabError`. Each class carries the process exit code the
command line uses for it, so the CLI maps errors to exit codes in one place (documented in README.md).
"""

from __future__ import annotations

from typing import ClassVar


class ExitCode:
    """Process exit codes of the ``peerlab-tui`` command (documented in README.md)."""

    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad arguments or bad input (click uses 2 for usage errors too)
    AUTH = 3  # missing, wrong or insufficient credentials
    REFUSED = 4  # a limit or policy refused the request (lease limit, safety check)
    EXHAUSTED = 5  # a shared resource is exhausted (prefix pool)
    NOT_FOUND = 6  # the named object does not exist (or is not yours)
    UNREACHABLE = 7  # the gateway, a daemon or a socket could not be reached
    EXTERNAL = 8  # an external program (bird, exabgp, wireguard-go, ip) failed


class PeerlabError(Exception):
    """Base class of every error PeerLab raises on purpose."""

    exit_code: ClassVar[int] = ExitCode.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(PeerlabError):
    """Bad input from the user: a malformed argument, file or value."""

    exit_code = ExitCode.USAGE


class ConfigError(InputError):
    """A configuration file or setting is invalid or missing."""


class ExternalProgramError(PeerlabError):
    """An external program (bird, exabgp, wireguard-go, ip, ...) failed or is missing."""

    exit_code = ExitCode.EXTERNAL


# --- gateway -------------------------------------------------------------------------------------------


class GatewayError(PeerlabError):
    """An error reported by, or while talking to, the lease gateway."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class TransportError(GatewayError):
    """The gateway could not be reached, or the connection failed mid-request."""

    exit_code = ExitCode.UNREACHABLE


class AuthenticationError(GatewayError):
    """The token is missing, wrong, or lacks the rights for this call (HTTP 401/403 on auth)."""

    exit_code = ExitCode.AUTH


class BadRequestError(GatewayError):
    """The gateway rejected the request as malformed (HTTP 400/422)."""

    exit_code = ExitCode.USAGE


class LeaseLimitError(GatewayError):
    """The user already holds the maximum number of active leases (HTTP 403 on prefix request)."""

    exit_code = ExitCode.REFUSED


class PoolExhaustedError(GatewayError):
    """No prefix is free in the gateway's pools (HTTP 503)."""

    exit_code = ExitCode.EXHAUSTED


class NotFoundError(GatewayError):
    """The object does not exist or is not the caller's (HTTP 404)."""

    exit_code = ExitCode.NOT_FOUND


class ServerError(GatewayError):
    """The gateway failed (HTTP 5xx other than pool exhaustion)."""

    exit_code = ExitCode.ERROR
