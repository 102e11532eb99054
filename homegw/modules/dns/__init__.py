"""DNS module: caching forwarder with rebind protection and blocklists."""
