"""Benchmarks that print their figures: `ffstream bench learning`, `ffstream bench throughput`."""
