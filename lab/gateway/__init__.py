"""The lease gateway service (``peerlab-tui gateway ...``).

Modules: ``config`` (settings: CLI > env > YAML > defaults), ``clock`` (injectable time), ``db`` (schema,
engines, Alembic migrations shipped in ``migrations/``), ``service`` (domain logic, race-free allocation),
``app`` (FastAPI: user, admin, service, overlay, looking glass, metrics), ``cli`` (init, serve, user, token).
"""
