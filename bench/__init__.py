"""Benchmarks: `make bench`. Each prints its numbers and saves them under bench/results/."""
