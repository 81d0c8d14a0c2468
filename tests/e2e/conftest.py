"""End-to-end tests share the data-plane tests' fixtures: the test's own bus, a snapshot writer and
data-plane settings."""

from tests.dataplane.conftest import bus, dp_settings, writer

__all__ = ["bus", "dp_settings", "writer"]
