"""``python -m peerlab_tui.core.sflow.structures --markdown``: print the documentation of every tag."""

from peerlab_tui.core.sflow.structures import main

if __name__ == "__main__":  # importing this module (e.g. the architecture test) must not run it
    raise SystemExit(main())
