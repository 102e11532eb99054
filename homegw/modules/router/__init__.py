"""Router IO module: IPv4 forwarding in XDP."""
