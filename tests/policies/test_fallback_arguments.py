"""``fallback`` argument checks at decoration, and mutable fallback values served as fresh
copies (or as they are when they cannot be copied)."""

from __future__ import annotations

import threading

import pytest

from resilient import fallback


def test_value_and_func_together_are_refused() -> None:
    with pytest.raises(ValueError, match="value= or func=, not both"):
        fallback(value=1, func=lambda exc: 2)


def test_func_must_be_callable() -> None:
    with pytest.raises(TypeError, match="fallback func must be callable"):
        fallback(func=3)  # type: ignore[arg-type]


def test_cache_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_ttl must be > 0 seconds"):
        fallback(cache=True, cache_ttl=0)


def test_a_mutable_value_is_served_as_a_fresh_copy() -> None:
    @fallback(value={"bids": []}, name="fb-copy")
    def book() -> dict[str, list[int]]:
        raise ConnectionError("down")

    first = book()
    first["bids"].append(1)
    assert book() == {"bids": []}


def test_a_value_that_cannot_be_copied_is_served_as_it_is() -> None:
    lock = threading.Lock()
    value = [lock]

    @fallback(value=value, name="fb-uncopyable")
    def locks() -> list[threading.Lock]:
        raise ConnectionError("down")

    assert locks() is value
