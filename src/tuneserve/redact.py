"""Secrets kept out of what tuneserve prints, logs and stores: passwords in URLs."""

from __future__ import annotations

import re

__all__ = ["mask_url"]


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none). The last
    ``@`` ends the credentials, so a password holding ``/`` or ``@`` is hidden whole (a
    path holding both ``:`` and ``@`` is masked too much, never too little)."""
    # a password in the query string (?password=..., sslpassword=...) too
    url = re.sub(r"(?i)([?&](?:ssl)?password=)[^&]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
