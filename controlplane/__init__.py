"""The control plane: admin API (Litestar), configuration in Postgres, snapshot publishing over NATS.

Entry points: ``controlplane.server.serve`` (what ``ollamaflow controlplane`` runs),
``controlplane.app.create_app`` (the ASGI app) and ``controlplane.migrate.upgrade``.
"""
