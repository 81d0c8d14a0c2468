"""How both planes fingerprint a secret they compare: the SHA-256 of its bytes, in hex.

API keys are 256-bit random, so a fast hash loses nothing; admin tokens are chosen by people, which is
why the control plane warns about short ones (their digests travel in the snapshot).
"""

from __future__ import annotations

import hashlib

__all__ = ["digest"]


def digest(secret: str | bytes) -> str:
    """The SHA-256 of ``secret`` (text as UTF-8), as 64 lower-case hex digits."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).hexdigest()
