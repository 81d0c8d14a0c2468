"""Helpers shared by the tests: real services, processes, free ports."""
