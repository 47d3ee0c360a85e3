"""The embedded BGP speaker (ExaBGP driven through its process API) and the client-side safety checks."""

from peerlab_tui.core.bgp.errors import (
    BgpError,
    CommandRejectedError,
    CommandTimeoutError,
    ExaBgpError,
    MalformedError,
    NotAnnouncedError,
    SafetyError,
    SpeakerNotRunningError,
    UnknownRouteServerError,
)
from peerlab_tui.core.bgp.model import (
    AnnouncedRoute,
    Announcement,
    NeighborConfig,
    Preview,
    ReceivedRoute,
    SessionState,
    SessionStatus,
    SpeakerConfig,
    SpeakerEvent,
    SpeakerStatus,
)
from peerlab_tui.core.bgp.safety import SafetySettings, check_announcement, lease_actions
from peerlab_tui.core.bgp.speaker import Speaker, Subscription
from peerlab_tui.core.bgp.userside import UserSide, UserSideSpec

__all__ = [
    "AnnouncedRoute",
    "Announcement",
    "BgpError",
    "CommandRejectedError",
    "CommandTimeoutError",
    "ExaBgpError",
    "MalformedError",
    "NeighborConfig",
    "NotAnnouncedError",
    "Preview",
    "ReceivedRoute",
    "SafetyError",
    "SafetySettings",
    "SessionState",
    "SessionStatus",
    "Speaker",
    "SpeakerConfig",
    "SpeakerEvent",
    "SpeakerNotRunningError",
    "SpeakerStatus",
    "Subscription",
    "UnknownRouteServerError",
    "UserSide",
    "UserSideSpec",
    "check_announcement",
    "lease_actions",
]
