"""Benchmarks of agiformer's ops. Run as modules from the repository root; see benchmarks/README.md."""
