"""Log lines never carry a secret, whichever library writes them and at whatever level.

Backends can take their credentials in the query string (``api_key=...``), in a header or as a bearer
token, and HTTP libraries log the URLs they call (httpx at INFO); URLs can also carry ``user:password@``.
``RedactSecrets`` is a filter for the root logger's handlers: it rewrites each record's message with
query values, URL passwords and bearer or basic credentials replaced, so no handler ever sees them.
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactSecrets", "install_redaction", "redact"]

REDACTED = "REDACTED"

# name=value pairs after a "?" or "&" of a URL (the value ends at a separator, quote or space).
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&\s\"'#]+)=[^&\s\"'#]*")
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?<=://)([^/:@\s]*):[^@/\s]*@")
# Authorization values and common credential headers as they appear in logged header lists.
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_KEY_HEADER = re.compile(
    r"(?i)\b(x-api-key|api-key|authorization)(['\"]?\s*[:=,]\s*['\"]?)(?!(?:bearer|basic)\s)[^'\"\s,)}]+"
)


def redact(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``REDACTED``."""
    if "=" in text:
        text = _QUERY_VALUE.sub(rf"\1={REDACTED}", text)
    if "@" in text:
        text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    text = _CREDENTIAL.sub(rf"\1 {REDACTED}", text)
    return _KEY_HEADER.sub(rf"\1\2{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites the message of every record passing through (formatted once, arguments dropped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks end with the exception's text, which may quote a URL: format it now, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_redaction(root: logging.Logger | None = None) -> None:
    """Put one ``RedactSecrets`` on each handler of the root logger (call after configuring them)."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
