"""Per-test example budgets for the property suite.

``@examples(ci=N)`` runs N examples under the "ci" hypothesis profile (CI=true) and a
twentieth of that (at least 20) otherwise, so local runs stay quick while CI reaches its total.
``RESILIENT_PROPERTY_SCALE`` multiplies every budget (e.g. 0.1 for a smoke run, 5 for a soak).
"""

from __future__ import annotations

import os

from hypothesis import settings

IN_CI_PROFILE = settings.get_current_profile_name() == "ci"
SCALE = float(os.environ.get("RESILIENT_PROPERTY_SCALE", "1"))


def budget(ci: int, dev: int | None = None) -> int:
    """The number of examples a test runs under the current profile."""
    base = ci if IN_CI_PROFILE else (dev if dev is not None else max(20, ci // 20))
    return max(1, round(base * SCALE))


def examples(ci: int, dev: int | None = None) -> settings:
    """A settings decorator giving the test ``budget(ci, dev)`` examples."""
    return settings(max_examples=budget(ci, dev))
