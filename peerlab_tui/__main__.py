"""``python -m peerlab_tui``."""

from peerlab_tui.cli import main

main()
