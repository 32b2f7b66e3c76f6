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
from urllib.parse import quote, quote_plus, unquote, urlsplit

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
    "url_secret_parts",
]

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values cannot be told apart from ordinary text

_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)|(?<![a-z])pass(?![a-z])|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
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
    """Register several secret values at once (each also in its percent-encoded forms)."""
    global _secret_re
    with _lock:
        added = False
        for value in values:
            if value is None:
                continue
            text = str(value)
            if len(text) < MIN_SECRET_LENGTH:
                continue
            # and the forms URL and form encoders give it (p@ss/w0rd → p%40ss%2Fw0rd)
            for form in (text, quote(text, safe=""), quote(text), quote_plus(text)):
                if form not in _secrets:
                    _secrets.add(form)
                    added = True
        if added:
            ordered = sorted(_secrets, key=len, reverse=True)
            _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def secret_values() -> frozenset[str]:
    """The registered secret values (for tests and diagnostics; never print them)."""
    return frozenset(_secrets)


# A name that counts or measures something (token_count, password_required) holds no secret.
_NOT_SECRET = re.compile(
    r"(_count|_counts|_total|_rate|_ratio|_seconds|_ttl|_size|_limit|_enabled|_required)$",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """Whether a setting or field called ``name`` holds a secret."""
    return bool(_SECRET_KEY.search(name)) and not _NOT_SECRET.search(name)


def mask_url(url: str) -> str:
    """``scheme://user:password@host`` → ``scheme://user:***@host``."""
    return _URL_PASS.sub(lambda m: f"{m['k']}{MASK}{m['at']}", url)


def url_password(url: str) -> str | None:
    """The password of ``scheme://user:password@host`` (the part :func:`mask_url` masks),
    or ``None`` when the URL carries none."""
    match = _URL_PASS.search(url)
    return match["v"] if match else None


_URL_DELIMITERS = re.compile(r"[@/?#:\[\]]+")


def url_secret_parts(url: str) -> list[str]:
    """The password of ``url`` and every piece a URL parser may derive from it.

    A password with an unencoded ``@``, ``/``, ``?``, ``#`` or ``:`` is split differently by
    urllib, redis-py and asyncpg (part of it may become the host, the port, the path or the
    query, and then appears in their error messages): the password, its percent-decoded form
    and each piece between such delimiters are all returned, for :func:`register_secrets`.
    """
    if not isinstance(url, str) or "://" not in url:
        return []
    password = url_password(url)
    if not password:
        return []
    out = [password]
    decoded = unquote(password)
    if decoded != password:
        out.append(decoded)
    for text in (password, decoded):
        out.extend(p for p in _URL_DELIMITERS.split(text) if p)
    # what urllib itself derives from the authority (redis-py and asyncpg build on it)
    try:
        parts = urlsplit(url)
        derived = [parts.password, parts.hostname, parts.netloc, parts.path, parts.query]
        derived += [parts.fragment, str(parts.port) if parts.port else None]
    except ValueError as exc:  # "Port could not be cast …" quotes a piece of the password
        derived = [str(exc)]
    for piece in derived:
        if piece and piece in password:
            out.append(piece)
    return list(dict.fromkeys(p for p in out if len(p) >= MIN_SECRET_LENGTH))


def sanitize(text: object) -> str:
    """Return ``text`` as a string with every known or recognisable secret masked (an object
    whose ``str()`` raises is shown as ``<unprintable TypeName>``)."""
    if isinstance(text, str):
        s = text
    else:
        try:
            s = str(text)
        except Exception:
            return f"<unprintable {type(text).__name__}>"
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
            if is_secret_key(name) and v is not None and v != "" and not isinstance(v, bool):
                out[k] = MASK  # whatever the type: an all-digit api_key is a secret too
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
