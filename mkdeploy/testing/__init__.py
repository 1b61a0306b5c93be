"""Harnesses for the tests and benchmarks (the load generator that starts `mkd serve` subprocesses and
needs httpx, a test dependency). The product never imports this package: `make lint` checks it
(pyproject.toml, the "the product does not import its test harnesses" contract)."""
