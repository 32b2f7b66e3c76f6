"""Masking of secrets in any text or structure the package writes.

One function, :func:`sanitize`, is used by logs, errors, health output and the CLI. It masks:
values registered as secrets (from settings), ``key=value`` pairs whose key looks secret,
passwords in DSNs/URLs and ``Authorization`` headers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MASK",
    "is_secret_key",
    "mask_url",
    "register_secret",
    "register_secrets",
    "sanitize",
    "sanitize_obj",
    "secret_values",
    "url_password",
]

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values cannot be told apart from ordinary text

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"credential|dsn|signature|session[_-]?id|cookie)",
    re.IGNORECASE,
)
_KV = re.compile(
    r"""(?P<k>["']?[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|
    private[_-]?key|credential|signature)[\w.-]*["']?\s*[=:]\s*)(?P<q>["']?)(?P<v>[^\s"',;&}]+)""",
    re.IGNORECASE | re.VERBOSE,
)
_AUTH = re.compile(
    r"(?P<k>\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)(?P<v>[^\"'\r\n,}]+)", re.IGNORECASE
)
_BEARER = re.compile(r"\b(?P<k>bearer|basic|token)\s+(?P<v>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
# Greedy up to the last "@" of the URL: an unencoded "@" or "/" in a password is still masked.
_URL_PASS = re.compile(
    r"(?P<k>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<v>\S+)(?P<at>@)(?=[^@\s/]+)", re.IGNORECASE
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def register_secret(value: object) -> None:
    """Mask ``value`` wherever it appears from now on (values under 4 characters are ignored)."""
    register_secrets([value])


def register_secrets(values: Iterable[object]) -> None:
    """Register several secret values at once."""
    global _secret_re
    with _lock:
        added = False
        for value in values:
            if value is None:
                continue
            text = str(value)
            if len(text) >= MIN_SECRET_LENGTH and text not in _secrets:
                _secrets.add(text)
                added = True
        if added:
            ordered = sorted(_secrets, key=len, reverse=True)
            _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def secret_values() -> frozenset[str]:
    """The registered secret values (for tests and diagnostics; never print them)."""
    return frozenset(_secrets)


def is_secret_key(name: str) -> bool:
    """Whether a setting or field called ``name`` holds a secret."""
    return bool(_SECRET_KEY.search(name))


def mask_url(url: str) -> str:
    """``scheme://user:password@host`` → ``scheme://user:***@host``."""
    return _URL_PASS.sub(lambda m: f"{m['k']}{MASK}{m['at']}", url)


def url_password(url: str) -> str | None:
    """The password of ``scheme://user:password@host`` (the part :func:`mask_url` masks),
    or ``None`` when the URL carries none."""
    match = _URL_PASS.search(url)
    return match["v"] if match else None


def sanitize(text: object) -> str:
    """Return ``text`` as a string with every known or recognisable secret masked."""
    s = text if isinstance(text, str) else str(text)
    pattern = _secret_re
    if pattern is not None:
        s = pattern.sub(MASK, s)
    if "://" in s:
        s = mask_url(s)
    s = _AUTH.sub(lambda m: f"{m['k']}{MASK}", s)
    s = _BEARER.sub(lambda m: f"{m['k']} {MASK}", s)
    return _KV.sub(lambda m: f"{m['k']}{m['q']}{MASK}", s)


def sanitize_obj(obj: Any) -> Any:
    """Copy a JSON-like structure, masking secret-named fields and secrets inside strings."""
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            name = str(k)
            if isinstance(v, str | bytes) and v and is_secret_key(name):
                out[k] = MASK
            else:
                out[k] = sanitize_obj(v)
        return out
    if isinstance(obj, list | tuple):
        return (
            type(obj)(sanitize_obj(v) for v in obj)
            if isinstance(obj, list)
            else tuple(sanitize_obj(v) for v in obj)
        )
    if isinstance(obj, str):
        return sanitize(obj)
    return obj
