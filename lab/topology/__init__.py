"""PeerLab lab package."""
