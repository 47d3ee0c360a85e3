"""The UI-free domain core of PeerLab TUI.

Everything here is shared by the Textual app and the headless command line. This package must never
import textual (a test enforces it).
"""
