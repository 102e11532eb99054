"""homegw: a residential gateway with an eBPF IO-module data plane."""

from importlib import metadata

try:
    __version__ = metadata.version("homegw")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
