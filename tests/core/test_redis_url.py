"""``redis.url`` forms: single server, Redis Cluster and Sentinel, validated with clear errors;
every key of one breaker in one cluster hash slot."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.cluster import key_slot

from resilient import ConfigError
from resilient._backends.redis import make_redis_client
from resilient._backends.shared_state import RedisSharedState
from resilient._core.redis_url import breaker_tag, limits_storage, parse_redis_url
from resilient.config import ConfigManager

hosts = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True),
        st.integers(1, 65535),
    ),
    min_size=1,
    max_size=5,
)
services = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)
passwords = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="%"),
    min_size=6,
    max_size=24,
)


def _netloc(nodes: list[tuple[str, int]]) -> str:
    return ",".join(f"{h}:{p}" for h, p in nodes)


def config_problem(url: str) -> str:
    """The ConfigError text for ``redis.url = url`` (fails when the URL is accepted)."""
    os.environ["AI_TRADER_REDIS__URL"] = url
    try:
        with pytest.raises(ConfigError) as info:
            ConfigManager(env="development").load_config()
    finally:
        del os.environ["AI_TRADER_REDIS__URL"]
    return str(info.value)


def config_accepts(url: str) -> str | None:
    os.environ["AI_TRADER_REDIS__URL"] = url
    try:
        return ConfigManager(env="development").load_config().redis.url
    finally:
        del os.environ["AI_TRADER_REDIS__URL"]


@hsettings(max_examples=60, deadline=None)
@given(nodes=hosts, tls=st.booleans(), password=st.none() | passwords)
def test_cluster_urls_parse_and_validate(
    nodes: list[tuple[str, int]], tls: bool, password: str | None
) -> None:
    from urllib.parse import quote

    auth = f":{quote(password, safe='')}@" if password else ""
    url = f"{'rediss' if tls else 'redis'}+cluster://{auth}{_netloc(nodes)}"
    target = parse_redis_url(url)
    assert target.kind == "cluster"
    assert list(target.hosts) == nodes
    assert target.tls is tls and target.password == password and target.db == 0
    assert config_accepts(url) == url


@hsettings(max_examples=60, deadline=None)
@given(nodes=hosts, service=services, db=st.none() | st.integers(0, 15))
def test_sentinel_urls_parse_and_validate(
    nodes: list[tuple[str, int]], service: str, db: int | None
) -> None:
    url = f"redis+sentinel://{_netloc(nodes)}/{service}" + ("" if db is None else f"/{db}")
    target = parse_redis_url(url)
    assert target.kind == "sentinel"
    assert list(target.hosts) == nodes
    assert target.service == service and target.db == (db or 0)
    assert config_accepts(url) == url
    uri, options = limits_storage(url)
    assert uri.startswith("redis+sentinel://") and uri.endswith(f"/{service}")
    assert options["db"] == (db or 0)


def test_default_ports() -> None:
    assert parse_redis_url("redis+sentinel://s1,s2/m").hosts == (("s1", 26379), ("s2", 26379))
    assert parse_redis_url("redis+cluster://n1,[::1]:7000").hosts == (("n1", 6379), ("::1", 7000))


@hsettings(max_examples=40, deadline=None)
@given(nodes=hosts.filter(lambda n: len(n) > 1), scheme=st.sampled_from(["redis", "rediss"]))
def test_multi_host_single_server_url_is_refused_with_the_fix(
    nodes: list[tuple[str, int]], scheme: str
) -> None:
    """Before: passed validation, then failed at first use with a ValueError on the port."""
    url = f"{scheme}://{_netloc(nodes)}/0"
    with pytest.raises(ValueError, match=r"redis\+cluster://"):
        parse_redis_url(url)
    message = config_problem(url)
    assert "redis.url" in message and "several hosts" in message and "redis+sentinel://" in message


BAD = [
    ("redis+sentinel://s1:26379", "names no Sentinel service"),
    ("redis+sentinel://s1:26379/m/0/x", "more than /<service>/<db>"),
    ("redis+sentinel://s1:26379/m/zero", "database 'zero' is not a number"),
    ("redis+cluster://n1:6379/3", "only database 0"),
    ("redis+cluster://n1:notaport", "port 'notaport'"),
    ("redis+cluster://n1:70000", "port '70000'"),
    ("redis+cluster://n1:6379,,n2:6379", "empty host"),
    ("redis+cluster://:7000", "has no name"),
    ("redis+cluster://n1:6379?ssl=1", "query options"),
    ("memcached://n1:11211", "is not supported"),
    ("unix://", "no socket path"),
]


@pytest.mark.parametrize(("url", "what"), BAD)
def test_malformed_urls_name_the_problem(url: str, what: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert what in str(info.value)
    assert what in config_problem(url)


@hsettings(max_examples=40, deadline=None)
@given(password=passwords)
def test_errors_never_show_the_password(password: str) -> None:
    from urllib.parse import quote

    url = f"redis+cluster://user:{quote(password, safe='')}@n1:6379/5"
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert quote(password, safe="") not in str(info.value)
    assert password not in str(info.value)


@hsettings(max_examples=300, deadline=None)
@given(name=st.text(max_size=40), prefix=st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))
def test_every_key_of_a_breaker_shares_one_slot(name: str, prefix: str) -> None:
    """Any name, braces included: the record and its permits hash to one cluster slot."""
    state = RedisSharedState.__new__(RedisSharedState)
    state.prefix = prefix
    record, permits = state._key(name), state._permits(name)
    assert key_slot(record.encode("utf-8", "surrogatepass")) == key_slot(
        permits.encode("utf-8", "surrogatepass")
    )
    other = "x" + name
    assert breaker_tag(other) != breaker_tag(name) or other == name


def test_clients_by_form() -> None:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import SentinelConnectionPool

    assert isinstance(make_redis_client("redis+cluster://127.0.0.1:1"), RedisCluster)
    master = make_redis_client("redis+sentinel://127.0.0.1:1/m/2")
    assert isinstance(master, Redis)
    assert isinstance(master.connection_pool, SentinelConnectionPool)
    assert master.connection_pool.connection_kwargs["db"] == 2
    assert isinstance(make_redis_client("redis://127.0.0.1:1/0"), Redis)
