"""IPv6 for the home: the WAN's address and delegated prefix (DHCPv6), the
LAN's prefixes, router advertisements and DHCPv6 server. Forwarding and the
firewall for IPv6 are the router's and the firewall's datapath."""
