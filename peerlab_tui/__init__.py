"""PeerLab TUI: a self-service BGP peering lab in the terminal."""

__version__ = "0.1.0"
