"""``redis.url`` forms, parsed and validated without importing redis-py.

Accepted:

- ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix://[...]/path[?db=N]``:
  one server (redis-py's own URL rules);
- ``redis+cluster://[user:password@]h1:p1,h2:p2[/0]`` (``rediss+cluster://`` with TLS): a Redis
  Cluster reached through any of the listed nodes;
- ``redis+sentinel://[user:password@]h1:26379,h2:26379/<service>[/<db>]``
  (``rediss+sentinel://`` with TLS to the master): the master of ``service`` as the Sentinels
  name it, followed through failovers. The password is the master's.

Errors are :class:`ValueError` whose text names what is wrong and how to write it, with any
password masked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from resilient._core.sanitize import mask_url

__all__ = ["RedisTarget", "breaker_tag", "limits_storage", "parse_redis_url"]

SINGLE = ("redis", "rediss", "unix")
CLUSTER = ("redis+cluster", "rediss+cluster")
SENTINEL = ("redis+sentinel", "rediss+sentinel")
FORMS = (
    "redis://host:6379/0, rediss://host:6379/0, unix:///path/redis.sock, "
    "redis+cluster://h1:6379,h2:6379 or redis+sentinel://h1:26379,h2:26379/<service>/<db>"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis.url``.

    Attributes:
        kind: ``"single"``, ``"cluster"`` or ``"sentinel"``.
        url: the URL as given (redis-py parses single-server URLs itself).
        hosts: ``(host, port)`` of each listed node or Sentinel (empty for ``single``).
        tls: TLS to the data nodes.
        username: ACL user, or ``None``.
        password: password, or ``None``.
        service: Sentinel service (master) name.
        db: database number (always 0 for a cluster).
    """

    kind: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    username: str | None = None
    password: str | None = None
    service: str = ""
    db: int = 0


def _fail(url: str, what: str, fix: str) -> ValueError:
    return ValueError(f"redis.url {mask_url(url)!r}: {what}; {fix}")


def _port(url: str, text: str, default: int) -> int:
    if text == "":
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _fail(url, f"port {text!r} is not a number from 1 to 65535", f"write e.g. {FORMS}")
    return int(text)


def _hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise _fail(url, "has an empty host in its host list", "list hosts as h1:p1,h2:p2")
        if part.startswith("["):  # [::1]:6379
            host, sep, rest = part[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise _fail(url, f"host {part!r} is malformed", "write IPv6 hosts as [::1]:6379")
            port = _port(url, rest[1:], default_port)
        else:
            host, _, port_text = part.partition(":")
            port = _port(url, port_text, default_port)
        if not host:
            raise _fail(url, f"host {part!r} has no name", "write each host as name:port")
        found.append((host, port))
    return tuple(found)


def _split(url: str) -> tuple[str, str, str | None, str | None, str, str]:
    """scheme, netloc (hosts), username, password, path, query."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _fail(url, "is not a URL", f"write one of {FORMS}")
    # the userinfo ends at the last "@" (a password may hold "@", "/", "?" or "#")
    at = rest.rfind("@")
    username = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    return scheme.lower(), netloc, username, password, (slash + path), query


def _db(url: str, text: str) -> int:
    if text == "":
        return 0
    if not text.isdigit():
        raise _fail(
            url, f"database {text!r} is not a number", "end the URL with /0 (or another db)"
        )
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse and validate a ``redis.url`` of any accepted form.

    Raises:
        ValueError: the URL is malformed; the message names the problem and the fix.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"redis.url must be a non-empty URL such as {FORMS}")
    scheme, netloc, username, password, path, query = _split(url.strip())
    if scheme in SINGLE:
        if scheme == "unix":
            if not path or path == "/":
                raise _fail(url, "has no socket path", "write unix:///path/to/redis.sock")
            return RedisTarget("single", url, username=username, password=password)
        if "," in netloc:
            raise _fail(
                url,
                "lists several hosts, which a single-server URL cannot use",
                "write redis+cluster://h1:p1,h2:p2 for a Redis Cluster or "
                "redis+sentinel://h1:26379,h2:26379/<service>/<db> for Sentinel",
            )
        hosts = _hosts(url, netloc, 6379)
        db = _db(url, path.strip("/"))
        return RedisTarget("single", url, hosts, scheme == "rediss", username, password, "", db)
    if scheme in CLUSTER:
        if query:
            raise _fail(url, "has query options, which cluster URLs do not take", "remove them")
        db_text = path.strip("/")
        if db_text not in ("", "0"):
            raise _fail(
                url,
                f"selects database {db_text!r}; a Redis Cluster has only database 0",
                "drop the /db part or write /0",
            )
        hosts = _hosts(url, netloc, 6379)
        return RedisTarget("cluster", url, hosts, scheme.startswith("rediss"), username, password)
    if scheme in SENTINEL:
        if query:
            raise _fail(url, "has query options, which Sentinel URLs do not take", "remove them")
        hosts = _hosts(url, netloc, 26379)
        parts = [p for p in path.split("/") if p != ""]
        if not parts:
            raise _fail(
                url,
                "names no Sentinel service",
                "write redis+sentinel://h1:26379,h2:26379/<service>/<db>, e.g. .../mymaster/0",
            )
        if len(parts) > 2:
            raise _fail(url, "has more than /<service>/<db> after the hosts", "remove the rest")
        db = _db(url, parts[1] if len(parts) == 2 else "")
        return RedisTarget(
            "sentinel",
            url,
            hosts,
            scheme.startswith("rediss"),
            username,
            password,
            unquote(parts[0]),
            db,
        )
    raise _fail(url, f"scheme {scheme + '://'!r} is not supported", f"write one of {FORMS}")


def breaker_tag(name: str) -> str:
    """The hash tag that puts every key of breaker ``name`` in one cluster slot.

    The name itself when it can be a tag (readable keys), otherwise a digest of it: a name
    holding ``{`` or ``}`` (or an empty one) would end the tag early or leave it empty.
    """
    if name and "{" not in name and "}" not in name:
        return name
    return "h" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def limits_storage(url: str) -> tuple[str, dict[str, Any]]:
    """The ``limits`` storage URI and options for ``url`` (the shared rate limiter).

    Raises:
        ValueError: the URL is malformed.
    """
    target = parse_redis_url(url)
    if target.kind == "single":
        return url, {}
    auth = ""
    if target.username or target.password is not None:
        auth = quote(target.username or "", safe="")
        if target.password is not None:
            auth += ":" + quote(target.password, safe="")
        auth += "@"
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.hosts)
    options: dict[str, Any] = {"ssl": True} if target.tls else {}
    if target.kind == "cluster":
        return f"redis+cluster://{auth}{hosts}", options
    options["db"] = target.db
    return f"redis+sentinel://{auth}{hosts}/{quote(target.service, safe='')}", options
