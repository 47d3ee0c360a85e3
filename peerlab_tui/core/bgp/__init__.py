"""PeerLab TUI package."""
