"""Example user IO modules (README, "User IO modules: the SDK")."""
