"""pybreaker, imported without importing redis.

pybreaker imports redis at its top (``Redis``, ``Pipeline``, ``RedisError``, for its
``CircuitRedisStorage``), and redis is most of what ``import resilient`` would cost. So when
redis is not imported yet, pybreaker is imported with redis hidden from the importing thread
only, and pybreaker's redis names are bound the moment redis is imported, by anyone: a host using
``pybreaker.CircuitRedisStorage`` finds pybreaker as if it had imported redis itself.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["pybreaker"]


class _RedisWatch(MetaPathFinder):
    """Hides redis from the thread importing pybreaker, then binds pybreaker's redis names
    after redis is imported. It stays in ``sys.meta_path``, inert once done: removing a finder
    could make an import running in another thread skip the finder after it."""

    def __init__(self) -> None:
        self._hiding = threading.local()
        self._lock = threading.Lock()
        self._pybreaker: ModuleType | None = None
        self._done = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "redis" or self._done:
            return None
        if getattr(self._hiding, "on", False):
            raise ModuleNotFoundError("redis is hidden while pybreaker is imported", name=fullname)
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: ModuleSpec | None = find(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _BindAfter(spec.loader, self)
            return spec
        return None

    def import_pybreaker(self) -> ModuleType:
        self._hiding.on = True
        try:
            module = importlib.import_module("pybreaker")
        finally:
            self._hiding.on = False
        with self._lock:
            self._pybreaker = module
            self._done = bool(module.HAS_REDIS_SUPPORT)
        if not self._done and "redis" in sys.modules:
            # imported meanwhile by another thread (this waits until its import has finished)
            self.bind(importlib.import_module("redis"))
        return module

    def bind(self, redis: ModuleType) -> None:
        """Give pybreaker the names its own ``from redis import ...`` would have bound."""
        try:
            names = {
                "Redis": redis.Redis,
                "Pipeline": importlib.import_module("redis.client").Pipeline,
                "RedisError": importlib.import_module("redis.exceptions").RedisError,
            }
        except (ImportError, AttributeError):
            return  # as pybreaker on a broken redis: no CircuitRedisStorage
        with self._lock:
            if self._pybreaker is None or self._done:
                return  # pybreaker is still being imported: import_pybreaker binds
            vars(self._pybreaker).update(names, HAS_REDIS_SUPPORT=True)
            self._done = True


class _BindAfter(Loader):
    """redis's own loader, calling :meth:`_RedisWatch.bind` once redis has been executed."""

    def __init__(self, loader: Loader, watch: _RedisWatch) -> None:
        self._loader = loader
        self._watch = watch

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # redis sees its real loader, as if it had not been watched
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._watch.bind(module)


def _import() -> ModuleType:
    if "pybreaker" in sys.modules or "redis" in sys.modules:
        return importlib.import_module("pybreaker")
    watch = _RedisWatch()
    sys.meta_path.insert(0, watch)
    return watch.import_pybreaker()


if TYPE_CHECKING:
    import pybreaker
else:
    pybreaker = _import()
