"""Example user IO modules (README, "User IO modules: the SDK"): the C
sources next to this file, their uploads in examples.py."""

from homegw.usermodules.examples.examples import EXAMPLES, Example, examples

__all__ = ["EXAMPLES", "Example", "examples"]
