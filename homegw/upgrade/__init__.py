"""Image upgrades with A/B rollback and factory reset (issue 15).

- manifest.py: the bundle's manifest (pydantic) and its Ed25519 signature
- bundle.py: the .hgwup bundle: ``make`` and the streaming reader
- slots.py: the A/B state (kernel command line, partitions, grubenv, release)
- apply.py: apply a bundle to the inactive slot, confirm a trial, factory reset
- control.py: the management API's view of it (mixed into Management)
"""
