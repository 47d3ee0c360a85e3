"""Errors of the WireGuard overlay: every one is an :class:`ExternalProgramError` subclass (exit code 8)
except a missing namespace, which is the user's to fix (exit code 6)."""

from __future__ import annotations

from peerlab_tui.core.errors import ExitCode, ExternalProgramError


class TunnelError(ExternalProgramError):
    """Building, configuring or reading a WireGuard interface failed."""


class BackendUnavailableError(TunnelError):
    """No WireGuard implementation can be used (no kernel module and no ``wireguard-go``)."""


class UapiError(TunnelError):
    """wireguard-go's UAPI socket refused a request (non-zero ``errno``) or could not be reached."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NamespaceNotFoundError(TunnelError):
    """The named network namespace does not exist."""

    exit_code = ExitCode.NOT_FOUND


class KeyFileError(TunnelError):
    """The private key file is unreadable, malformed or has unsafe permissions."""

    exit_code = ExitCode.USAGE
