"""``fallback(cache=True)`` with arguments and results of awkward types: one cached value per
distinct arguments, results that cannot be copied or restored, arguments that cannot be keyed."""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilient import fallback, get_fallback_cache


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Order:
    symbol: str
    qty: int


class Unreducible:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unreducible)

    def __hash__(self) -> int:
        return 1

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise RuntimeError("no reduce")


def _explode() -> Any:
    raise RuntimeError("cannot rebuild")


class BreaksOnRestore:
    """Pickles fine, fails when unpickled."""

    def __reduce__(self) -> Any:
        return (_explode, ())


def _flaky(results: dict[str, Any]) -> Callable[..., Any]:
    """A function that answers ``results["value"]`` until ``results["down"]`` is set."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        if results.get("down"):
            raise ConnectionError("feed down")
        return results["value"]

    return fn


@pytest.mark.parametrize(
    ("first", "other"),
    [
        ((b"abc",), (b"abd",)),
        (({"a": 1, "b": [1, 2]},), ({"a": 1, "b": [1, 3]},)),
        (({1, 2, 3},), ({1, 2, 4},)),
        ((frozenset({"x"}),), (frozenset({"y"}),)),
        ((Colour.RED,), (Colour.BLUE,)),
        ((Order("AAPL", 1),), (Order("AAPL", 2),)),
        ((1.5, None, True), (1.5, None, False)),
        ((len,), (abs,)),
    ],
)
def test_one_cached_value_per_distinct_arguments(
    first: tuple[Any, ...], other: tuple[Any, ...]
) -> None:
    state: dict[str, Any] = {"value": 42}
    fn = fallback(cache=True, name=f"keys-{type(first[0]).__name__}")(_flaky(state))
    assert fn(*first) == 42
    state["down"] = True
    assert fn(*first) == 42  # served from the cache
    with pytest.raises(ConnectionError):
        fn(*other)  # other arguments: nothing cached


def test_deeply_nested_arguments_run_uncached() -> None:
    nested: Any = 0
    for _ in range(200):
        nested = [nested]
    state: dict[str, Any] = {"value": "fresh"}
    fn = fallback(cache=True, name="keys-deep")(_flaky(state))
    assert fn(nested) == "fresh"
    state["down"] = True
    with pytest.raises(ConnectionError):
        fn(nested)


def test_an_argument_that_cannot_be_reduced_runs_uncached() -> None:
    state: dict[str, Any] = {"value": 7}
    fn = fallback(cache=True, name="keys-unreducible")(_flaky(state))
    assert fn(Unreducible()) == 7
    state["down"] = True
    with pytest.raises(ConnectionError):
        fn(Unreducible())


def test_identity_compared_arguments_are_keyed_by_identity() -> None:
    class Session:  # compared by identity
        pass

    one, two = Session(), Session()
    state: dict[str, Any] = {"value": "ok"}
    fn = fallback(cache=True, name="keys-identity")(_flaky(state))
    assert fn(one) == "ok"
    state["down"] = True
    assert fn(one) == "ok"
    with pytest.raises(ConnectionError):
        fn(two)


def test_a_result_that_cannot_be_copied_is_not_cached() -> None:
    state: dict[str, Any] = {"value": threading.Lock()}
    fn = fallback(cache=True, name="keys-lock")(_flaky(state))
    assert fn("x") is state["value"]
    state["down"] = True
    with pytest.raises(ConnectionError):
        fn("x")


def test_a_result_that_cannot_be_restored_is_a_miss() -> None:
    state: dict[str, Any] = {"value": BreaksOnRestore()}
    fn = fallback(cache=True, name="keys-restore")(_flaky(state))
    assert fn("x") is state["value"]
    state["down"] = True
    with pytest.raises(ConnectionError):
        fn("x")


def test_the_in_process_cache_evicts_the_oldest_entry() -> None:
    cache = get_fallback_cache()
    cache_type = type(cache)
    with pytest.raises(ValueError, match="max_entries must be ≥ 1"):
        cache_type(max_entries=0)  # type: ignore[call-arg]
    small = cache_type(max_entries=2)  # type: ignore[call-arg]
    small.set_sync("a", 1, 60.0)
    small.set_sync("b", 2, 60.0)
    assert small.get_sync("a") is not None  # "a" is now the most recent
    small.set_sync("c", 3, 60.0)
    assert small.get_sync("b") is None
    hit = small.get_sync("a")
    assert hit is not None and hit.value == 1
    assert len(small) == 2  # type: ignore[arg-type]


class Slotted:
    """Compared by identity and not weakly referenceable."""

    __slots__ = ()


class Named:
    """Reduced to a global name, like a singleton."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Named) and other.tag == self.tag

    def __hash__(self) -> int:
        return hash(self.tag)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return "Named"


class OddReduce(Named):
    def __reduce_ex__(self, protocol: Any) -> Any:
        return 5


class Tags(list[str]):
    """Compared by value, reduced with list items (pickle's fourth element)."""


class Attrs(dict[str, int]):
    """Compared by value, reduced with dict items (pickle's fifth element)."""


@dataclasses.dataclass
class Hostile:
    symbol: str

    def __getattribute__(self, name: str) -> Any:
        if name == "symbol":
            raise RuntimeError("hostile")
        return object.__getattribute__(self, name)


def _cached_after_outage(name: str, first: Any, again: Any) -> bool:
    """Whether ``again`` is served the value cached for ``first`` during an outage."""
    state: dict[str, Any] = {"value": "cached"}
    fn = fallback(cache=True, name=name)(_flaky(state))
    assert fn(first) == "cached"
    state["down"] = True
    try:
        return bool(fn(again) == "cached")
    except ConnectionError:
        return False


def test_reduced_to_a_name_is_keyed_by_that_name() -> None:
    assert _cached_after_outage("keys-named", Named("a"), Named("b"))


def test_reduce_that_is_no_tuple_runs_uncached() -> None:
    odd = OddReduce("a")
    assert not _cached_after_outage("keys-odd", odd, odd)


def test_identity_compared_without_weak_references_runs_uncached() -> None:
    slotted = Slotted()
    assert not _cached_after_outage("keys-slotted", slotted, slotted)


def test_value_compared_containers_are_keyed_by_their_items() -> None:
    assert _cached_after_outage("keys-tags", Tags(["a", "b"]), Tags(["a", "b"]))
    assert not _cached_after_outage("keys-tags2", Tags(["a", "b"]), Tags(["a", "c"]))
    assert _cached_after_outage("keys-attrs", Attrs(a=1), Attrs(a=1))
    assert not _cached_after_outage("keys-attrs2", Attrs(a=1), Attrs(a=2))


def test_a_hostile_argument_runs_uncached() -> None:
    hostile = Hostile.__new__(Hostile)
    assert not _cached_after_outage("keys-hostile", hostile, hostile)
