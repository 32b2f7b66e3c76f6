"""Breaker API edges: option and name errors, ``call`` given a coroutine function, the
``calling()`` block interrupted, generator functions (their end is the outcome), a forced
open circuit and the slow-call default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilient import CircuitOpenError, breaker, breakers, get_breaker


def test_name_and_option_errors() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        get_breaker("  ")
    with pytest.raises(TypeError, match="unknown breaker option"):
        get_breaker("edge-opts", colour="red")  # type: ignore[call-arg]
    assert "edge-opts" not in breakers.names()


def test_repr_names_the_breaker_and_state() -> None:
    cb = get_breaker("edge-repr")
    assert repr(cb) == "<Breaker 'edge-repr' closed>"


def test_call_refuses_a_coroutine_function() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(TypeError, match="is async: use"):
        get_breaker("edge-call").call(fetch)


def test_an_interrupted_calling_block_is_neither_success_nor_failure() -> None:
    cb = get_breaker("edge-calling", failure_threshold=1)
    with pytest.raises(KeyboardInterrupt), cb.calling():
        raise KeyboardInterrupt
    assert cb.state == "closed"
    assert cb.snapshot().failure_count == 0
    with pytest.raises(ConnectionError), cb.calling():
        raise ConnectionError("down")
    assert cb.state == "open"


def test_a_generator_outcome_is_its_end() -> None:
    @breaker(name="edge-gen", failure_threshold=1)
    def rows(fail: bool) -> Iterator[int]:
        yield 1
        if fail:
            raise ConnectionError("stream cut")
        yield 2

    assert list(rows(False)) == [1, 2]
    gen = rows(True)
    assert next(gen) == 1
    assert breakers.get("edge-gen").state == "closed"  # not over yet
    with pytest.raises(ConnectionError):
        list(gen)
    assert breakers.get("edge-gen").state == "open"
    with pytest.raises(CircuitOpenError):
        list(rows(False))
    breakers.disable("edge-gen")
    try:
        assert list(rows(False)) == [1, 2]  # a disabled breaker lets every call through
    finally:
        breakers.enable("edge-gen")


def test_a_forced_open_circuit_rejects_until_reset() -> None:
    cb = get_breaker("edge-forced", reset_timeout=0.01)
    cb.force_open()
    with pytest.raises(CircuitOpenError):
        cb.call(lambda: 1)
    assert cb.state == "open"
    cb.reset()
    assert cb.call(lambda: 2) == 2


def test_slow_call_duration_alone_counts_every_slow_call() -> None:
    cb = get_breaker("edge-slow", slow_call_duration=0.5)
    assert cb.slow_call_rate_threshold == 1.0
