"""Phantoms and quality yardsticks shared by the tests, the benchmarks and the demo."""
