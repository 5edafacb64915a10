"""The fault tests' tiny generated benchmark, shared: its source stands in for a simulator (GTA5 layout)."""

from tests.faults.conftest import tiny_bench  # noqa: F401
