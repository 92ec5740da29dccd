"""Development harness shared by the tests and the benchmarks (not shipped to production)."""
