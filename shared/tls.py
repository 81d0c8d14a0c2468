"""How both planes reach backends over https: one TLS policy, from two shared settings.

``OLLAMAFLOW_BACKEND_CA_FILE`` names a PEM bundle of CAs trusted *in addition to* the system's (a
private CA that signed the backends' certificates); ``OLLAMAFLOW_BACKEND_TLS_VERIFY=false`` turns
verification off altogether (certificate and host name; for tests and trusted networks only). The
data plane's upstream client, its model-authoring client and the control plane's probes, model
reads and pulls all use the context built here. Proxy environment variables (``HTTP_PROXY``,
``HTTPS_PROXY``, ``NO_PROXY``, ``ALL_PROXY``) are ignored everywhere: backends are reached directly.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["backend_ssl_context"]


def backend_ssl_context(ca_file: Path | None = None, verify: bool = True) -> ssl.SSLContext:
    """The client context for https backends: the system's CAs plus ``ca_file``, verified unless
    ``verify`` is False. An unreadable or invalid ``ca_file`` is a ConfigError naming the setting."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"OLLAMAFLOW_BACKEND_CA_FILE: cannot load CA bundle {ca_file}: {exc}") from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
