"""Command-line plumbing shared by every ``peerlab-tui`` verb (private)."""
