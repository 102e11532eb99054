"""DHCP IO module: DHCP server, LAN DHCP guard and WAN DHCP client."""
