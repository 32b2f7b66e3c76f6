"""@fallback against hostile input: a raising on= predicate, and the bare decorator."""

from __future__ import annotations

import uuid

import pytest
from _policy_support import MODES, Script, invoke, make

from resilient import fallback
from resilient._policies.fallback import fallback_status


@pytest.fixture
def name() -> str:
    return f"fbh-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("mode", MODES)
async def test_raising_on_predicate_is_no_match(mode: str, name: str) -> None:
    """fallback(on=...) whose predicate raises does not replace the error: the caller gets
    its own exception, and no degraded episode is left open."""
    err = ConnectionError("down")

    def on(exc: BaseException) -> bool:
        return exc.status == 503  # type: ignore[attr-defined]

    fn = fallback(value="stale", on=on, name=name)(make(mode, Script(err, "fresh")))
    with pytest.raises(ConnectionError) as info:
        await invoke(fn)
    assert info.value is err
    status = fallback_status()[name]
    assert (status.degraded, status.served) == (False, 0)
    assert await invoke(fn) == "fresh"


@pytest.mark.parametrize("mode", MODES)
async def test_raising_predicate_in_a_tuple_still_lets_types_match(mode: str, name: str) -> None:
    """A raising predicate next to an exception type: the type still matches."""

    def on(exc: BaseException) -> bool:
        raise RuntimeError("bug")

    fn = fallback(value="stale", on=(on, ConnectionError), name=name)(
        make(mode, Script(ConnectionError("x"), KeyError("y")))
    )
    assert await invoke(fn) == "stale"
    with pytest.raises(KeyError):
        await invoke(fn)


def test_bare_fallback_fails_at_decoration_showing_the_forms() -> None:
    """@fallback without parentheses cannot know what to serve: the error shows the forms."""
    with pytest.raises(TypeError) as info:

        @fallback
        def quote() -> float:
            return 1.0

    text = str(info.value)
    assert "@fallback(value=" in text and "cache=True" in text and "func=" in text
