"""Tests of the WireGuard overlay (peerlab_tui.core.tunnel and the tunnel verbs)."""
