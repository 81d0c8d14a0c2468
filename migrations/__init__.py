"""Alembic migrations of the control-plane database, shipped in the wheel.

Alembic is configured in code (``controlplane.migrate``): ``script_location`` points at this package,
so no alembic.ini is needed. Apply them with ``ollamaflow migrate``; the control plane also applies
them when it starts.
"""
