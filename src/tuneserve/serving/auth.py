"""API keys with scopes: ``predict`` (predictions and model metadata) and ``admin``
(everything, including loading and unloading models).

Keys come from ``--api-key KEY:SCOPE`` or ``TUNESERVE_API_KEYS="k1:predict,k2:admin"``.
With no keys configured the server is open. With keys: no key -> 401, a key without the
needed scope -> 403. Health, ``/v2`` server metadata, ``/metrics`` and the OpenAPI pages
stay open (probes and scrapers).
"""

from __future__ import annotations

import hmac
import os

from tuneserve.exceptions import InvalidInputError

SCOPES = ("predict", "admin")
#: Paths anyone may call.
OPEN = ("/v2/health/", "/metrics", "/docs", "/openapi.json", "/redoc")


def parse_keys(specs: list[str] | None = None) -> dict[str, str]:
    """``KEY:SCOPE`` entries (and ``TUNESERVE_API_KEYS``) -> {key: scope}."""
    entries = list(specs or [])
    env = os.environ.get("TUNESERVE_API_KEYS", "")
    entries += [e for e in env.split(",") if e.strip()]
    keys: dict[str, str] = {}
    for entry in entries:
        key, sep, scope = entry.strip().rpartition(":")
        if not sep or not key or scope not in SCOPES:
            raise InvalidInputError(
                f"API key entry {entry.strip()[:4]}... must be KEY:SCOPE with scope one of "
                f"{', '.join(SCOPES)}"
            )
        if len(key) < 8:
            raise InvalidInputError("API keys must be at least 8 characters long")
        keys[key] = scope
    return keys


def needed_scope(method: str, path: str) -> str | None:
    """The scope a request needs, or None for open paths."""
    if path == "/v2" or path.startswith(OPEN):
        return None
    if path.startswith("/v2/repository"):
        return "admin"
    return "predict"


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


def check(keys: dict[str, str], key: str | None, scope: str) -> int | None:
    """None when allowed, else the HTTP status: 401 (no or unknown key) or 403 (scope)."""
    if key is None:
        return 401
    # compared as bytes: compare_digest raises TypeError on str with non-ASCII characters
    presented = _raw(key)
    found = next((s for k, s in keys.items() if hmac.compare_digest(_raw(k), presented)), None)
    if found is None:
        return 401
    if scope == "admin" and found != "admin":
        return 403
    return None


def _raw(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")  # any str, even one from odd argv bytes
