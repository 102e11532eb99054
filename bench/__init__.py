"""Benchmarks: homegw side by side with the Linux baseline, in one run."""
