"""Log lines never carry a secret, whichever library writes them and at whatever level.

Backends can take their credentials in the query string (``api_key=...``), in a header or as a bearer
token, and HTTP libraries log the URLs they call (httpx at INFO); URLs can also carry ``user:password@``.
``RedactSecrets`` is a filter for the root logger's handlers: it rewrites each record's message with
query values, URL passwords and bearer or basic credentials replaced, so no handler ever sees them.

Patterns cannot know that ``X-Team: blue`` is a credential, or a query value logged without its URL.
So each plane also hands the filter the backend secret values it holds (``KnownSecrets``: the control
plane from its rows, a data plane from the snapshot it applied), and every literal occurrence of one
is replaced too, whatever the line looks like.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["REDACTED", "KnownSecrets", "RedactSecrets", "install_redaction", "redact"]

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


class KnownSecrets:
    """Secret values this process holds (backend tokens, header values, query values), cut out of every
    log line. The owner replaces the whole set whenever its configuration changes.

    Values are indexed by their first ``MIN_LENGTH`` characters, so a line costs one dictionary lookup
    per character however many values there are (a regular expression of 30,000 alternatives took
    0.2 s per line).
    """

    MIN_LENGTH = 4  # shorter values ("1", "on") would blank ordinary words and hide nothing worth it

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._by_prefix: dict[str, tuple[str, ...]] = {}

    def replace(self, values: Iterable[str]) -> None:
        wanted = frozenset(v for v in values if len(v) >= self.MIN_LENGTH)
        if wanted == self._values:
            return
        index: dict[str, list[str]] = {}
        for value in wanted:
            index.setdefault(value[: self.MIN_LENGTH], []).append(value)
        # Longest first, so that a value containing another is replaced whole.
        by_prefix = {head: tuple(sorted(found, key=len, reverse=True)) for head, found in index.items()}
        self._values, self._by_prefix = wanted, by_prefix  # redact() reads the index once: old or new

    def redact(self, text: str) -> str:
        index, width = self._by_prefix, self.MIN_LENGTH
        if not index:
            return text
        # Most lines hold no secret: one set of the line's windows says so without a Python-level scan.
        if index.keys().isdisjoint({text[i : i + width] for i in range(len(text) - width + 1)}):
            return text
        parts: list[str] = []
        start = i = 0
        end = len(text) - width
        while i <= end:
            for value in index.get(text[i : i + width], ()):
                if text.startswith(value, i):
                    parts += (text[start:i], REDACTED)
                    i = start = i + len(value)
                    break
            else:
                i += 1
        if not parts:
            return text
        parts.append(text[start:])
        return "".join(parts)


class RedactSecrets(logging.Filter):
    """Rewrites the message of every record passing through (formatted once, arguments dropped)."""

    def __init__(self, known: KnownSecrets | None = None) -> None:
        super().__init__()
        self.known = known

    def _clean(self, text: str) -> str:
        text = redact(text)
        return self.known.redact(text) if self.known is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks end with the exception's text, which may quote a URL: format it now, redacted.
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


def install_redaction(root: logging.Logger | None = None, known: KnownSecrets | None = None) -> None:
    """Put one ``RedactSecrets`` on each handler of the root logger (call after configuring them);
    ``known``: the process's secret values, for the filters already there too."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        present = [f for f in handler.filters if isinstance(f, RedactSecrets)]
        if not present:
            handler.addFilter(RedactSecrets(known))
        elif known is not None:
            for existing in present:
                existing.known = known
