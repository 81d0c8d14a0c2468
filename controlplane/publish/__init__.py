"""Snapshot publishing: a pure builder (rows -> content) and the publisher that writes it to the bus."""
