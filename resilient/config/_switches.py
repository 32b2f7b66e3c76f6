"""Feature switches read on every decorated call: one attribute read, refreshed on reload."""

from __future__ import annotations

__all__ = ["Switches", "switches"]


class Switches:
    """Hot-path copies of ``resilience.circuit_breaker_enabled`` and ``retry_enabled``."""

    __slots__ = ("breaker_enabled", "generation", "retry_enabled")

    def __init__(self) -> None:
        self.breaker_enabled = True
        self.retry_enabled = True
        self.generation = 0  # bumped on every (re)load so cached thresholds can refresh

    def __repr__(self) -> str:
        return (
            f"Switches(breaker_enabled={self.breaker_enabled}, "
            f"retry_enabled={self.retry_enabled}, generation={self.generation})"
        )


switches = Switches()
