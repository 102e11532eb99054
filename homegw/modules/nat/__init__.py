"""NAT IO module: stateful NAPT (masquerade, port forwards) in XDP."""
