"""The PeerLab platform: gateway, route-server policy agent, one-machine IXP topology and sFlow relay."""
