"""Firewall IO module: default-deny for what comes from the WAN, anti-spoofing
on both NICs, in XDP (which bypasses netfilter and rp_filter)."""
