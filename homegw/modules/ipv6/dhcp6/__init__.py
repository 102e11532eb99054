"""DHCPv6 for the gateway: the WAN client (IA_NA + IA_PD) and the LAN server."""
