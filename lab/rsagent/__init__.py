"""Route-server policy agent: keeps one route server's BIRD equal to the gateway's leases.

* :mod:`lab.rsagent.settings` -- ``rs.yaml`` (static settings of the route server)
* :mod:`lab.rsagent.policy` -- THE import policy, declared once (BIRD rendering + Python explanation)
* :mod:`lab.rsagent.render` -- ``render_config(settings, mappings, tunnels) -> str``, pure
* :mod:`lab.rsagent.agent` -- poll, validate, apply without resets, report verdicts
* :mod:`lab.rsagent.wireguard` -- WireGuard peer sync of the route server
* :mod:`lab.rsagent.cli` -- ``peerlab-tui rs-agent``
"""
