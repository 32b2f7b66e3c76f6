"""A small AST mutation tester: one change at a time, each run against the module's own tests.

Operators: flipped comparisons (``<`` ↔ ``<=``, ``==`` ↔ ``!=``, ``is`` ↔ ``is not``,
``in`` ↔ ``not in``), ``and`` ↔ ``or``, ``+`` ↔ ``-`` and ``*`` ↔ ``/`` (also augmented),
integer constants ±1, ``True`` ↔ ``False``, ``not x`` → ``x``, and removed guards (an ``if``
without ``else`` whose test becomes ``False``). Docstrings, annotations and ``__all__``/
``__slots__`` are left alone.

The tree is copied to a temporary directory first, so the working copy is never modified and
may be edited while a run goes on. A mutant is *killed* when its tests fail (or time out).
Mutants listed in ``tools/mutation_equivalent.toml`` (by module, enclosing function,
operator and original expression) are reported apart and left out of the kill rate.

Usage: ``python tools/mutate.py [MODULE ...] [--json OUT] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS: dict[str, list[str]] = {
    # The most targeted file first: with -x a killed mutant stops at its first failure.
    "resilient/trading/_risk.py": [
        "tests/trading/test_risk_states.py",
        "tests/trading/test_risk_boundaries.py",
        "tests/trading/test_risk.py",
        "tests/trading/test_trading_money.py",
    ],
    "resilient/trading/_orders.py": [
        "tests/trading/test_orders_reading.py",
        "tests/trading/test_risk_boundaries.py",
        "tests/trading/test_trading_orders.py",
        "tests/trading/test_trading_money.py",
    ],
    "resilient/_policies/breaker_window.py": [
        "tests/policies/test_breaker_window.py",
        "tests/policies/test_breaker.py",
        "tests/policies/test_breaker_model.py",
    ],
    "resilient/_policies/retry.py": [
        "tests/policies/test_retry_policies.py",
        "tests/policies/test_retry.py",
    ],
    "resilient/_core/classify.py": [
        "tests/core/test_errors_classify_edges.py",
        "tests/core/test_errors_classify.py",
    ],
}

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
}
_SKIPPED_ASSIGNS = {"__all__", "__slots__"}


@dataclass(frozen=True)
class Mutant:
    index: int
    line: int
    where: str
    operator: str
    original: str

    def key(self) -> tuple[str, str, str]:
        return (self.where, self.operator, self.original)


class _Walker:
    """Visits candidate nodes in a fixed order; applies candidate ``target`` when given."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.found: list[Mutant] = []
        self.scope: list[str] = []

    def run(self, tree: ast.Module) -> None:
        self._body(tree.body)

    # --- traversal --------------------------------------------------------------------------

    def _body(self, stmts: list[ast.stmt]) -> None:
        for i, stmt in enumerate(stmts):
            if (
                i == 0
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                continue  # docstring
            self._stmt(stmt)

    def _stmt(self, node: ast.stmt) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.scope.append(node.name)
            if not isinstance(node, ast.ClassDef):
                for default in [*node.args.defaults, *node.args.kw_defaults]:
                    if default is not None:
                        self._expr(default, node, "default")
            self._body(node.body)
            self.scope.pop()
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            return
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in _SKIPPED_ASSIGNS for t in targets):
                return
            if isinstance(node, ast.AnnAssign):
                if node.value is not None:
                    self._expr(node.value, node, "value")
                return
        if isinstance(node, ast.If):
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                return
            if not node.orelse:
                self._candidate(node, "guard removed", node.test, lambda: _set(node, "test"))
        if isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
            swap = _BINOP_SWAP[type(node.op)]
            self._candidate(
                node,
                f"{_opname(node.op)}= -> {_opname(swap())}=",
                node,
                lambda: setattr(node, "op", swap()),
            )
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns", "type_comment"):
                continue
            if isinstance(value, list):
                if value and isinstance(value[0], ast.stmt):
                    self._body_no_doc(value)
                else:
                    for item in value:
                        if isinstance(item, ast.expr):
                            self._expr(item, node, field)
                        elif isinstance(item, ast.AST):
                            self._generic(item)
            elif isinstance(value, ast.expr):
                self._expr(value, node, field)
            elif isinstance(value, ast.AST):
                self._generic(value)

    def _body_no_doc(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            self._stmt(stmt)

    def _generic(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt):
            self._stmt(node)
            return
        if isinstance(node, ast.excepthandler):
            if node.type is not None:
                self._expr(node.type, node, "type")
            self._body_no_doc(node.body)
            return
        for _field, value in ast.iter_fields(node):
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.expr):
                        self._expr(item, node, "")
                    elif isinstance(item, ast.stmt):
                        self._stmt(item)
                    elif isinstance(item, ast.AST):
                        self._generic(item)
            elif isinstance(value, ast.expr):
                self._expr(value, node, "")
            elif isinstance(value, ast.AST):
                self._generic(value)

    def _expr(self, node: ast.expr, parent: ast.AST, field: str) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                swap = _COMPARE_SWAP.get(type(op))
                if swap is not None:
                    self._candidate(
                        node,
                        f"{_opname(op)} -> {_opname(swap())}",
                        node,
                        lambda i=i, swap=swap: node.ops.__setitem__(i, swap()),
                    )
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            self._candidate(
                node,
                f"{_opname(node.op)} -> {_opname(other())}",
                node,
                lambda: setattr(node, "op", other()),
            )
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            swap = _BINOP_SWAP[type(node.op)]
            if not _is_string_format(node):
                self._candidate(
                    node,
                    f"{_opname(node.op)} -> {_opname(swap())}",
                    node,
                    lambda: setattr(node, "op", swap()),
                )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._candidate(
                node, "not removed", node, lambda: _replace(parent, field, node, node.operand)
            )
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                self._candidate(
                    node,
                    f"{value} -> {not value}",
                    node,
                    lambda: setattr(node, "value", not value),
                )
            elif isinstance(value, int):
                for delta in (1, -1):
                    self._candidate(
                        node,
                        f"{value} -> {value + delta}",
                        node,
                        lambda delta=delta: setattr(node, "value", value + delta),
                    )
            elif isinstance(value, float):
                self._candidate(
                    node,
                    f"{value} -> {value + 1}",
                    node,
                    lambda: setattr(node, "value", value + 1),
                )
            return
        elif isinstance(node, ast.Lambda):
            self.scope.append("<lambda>")
            self._expr(node.body, node, "body")
            self.scope.pop()
            return
        for field_name, value in ast.iter_fields(node):
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.expr):
                        self._expr(item, node, field_name)
                    elif isinstance(item, ast.AST):
                        self._generic(item)
            elif isinstance(value, ast.expr):
                self._expr(value, node, field_name)
            elif isinstance(value, ast.AST):
                self._generic(value)

    # --- candidates -------------------------------------------------------------------------

    def _candidate(self, node: ast.AST, operator: str, shown: ast.AST, apply: object) -> None:
        index = len(self.found)
        mutant = Mutant(
            index=index,
            line=getattr(node, "lineno", 0),
            where=".".join(self.scope) or "<module>",
            operator=operator,
            original=ast.unparse(shown).splitlines()[0][:100],
        )
        self.found.append(mutant)
        if index == self.target:
            apply()  # type: ignore[operator]


def _set(node: ast.If, field: str) -> None:
    setattr(node, field, ast.Constant(value=False))


def _replace(parent: ast.AST, field: str, old: ast.expr, new: ast.expr) -> None:
    value = getattr(parent, field)
    if isinstance(value, list):
        value[value.index(old)] = new
    else:
        setattr(parent, field, new)


def _is_string_format(node: ast.BinOp) -> bool:
    return any(
        (isinstance(side, ast.Constant) and isinstance(side.value, str | bytes))
        or isinstance(side, ast.JoinedStr)
        for side in (node.left, node.right)
    )


def _opname(op: ast.AST) -> str:
    return {
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.In: "in",
        ast.NotIn: "not in",
        ast.And: "and",
        ast.Or: "or",
        ast.Add: "+",
        ast.Sub: "-",
        ast.Mult: "*",
        ast.Div: "/",
        ast.FloorDiv: "//",
    }.get(type(op), type(op).__name__)


def mutants_of(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in a fixed order."""
    walker = _Walker()
    walker.run(ast.parse(source))
    return walker.found


def mutated(source: str, index: int) -> str:
    """``source`` with mutant ``index`` applied."""
    tree = ast.parse(source)
    walker = _Walker(target=index)
    walker.run(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


# --- running ---------------------------------------------------------------------------------


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", "__pycache__", ".nox", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info"
    )
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)


def _pytest(workdir: Path, tests: list[str], timeout: float) -> tuple[int | None, float]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start
    return proc.returncode, time.perf_counter() - start


_PRELOAD = (
    "pytest",
    "hypothesis",
    "tenacity",
    "pybreaker",
    "dynaconf",
    "loguru",
    "pydantic",
    "sqlalchemy",
    "httpx",
    "redis",
    "asyncpg",
)


def _preload() -> None:
    """Import the heavy third-party dependencies once, in the parent (never the package
    itself): every forked mutant run then starts without paying for them."""
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional dependency that is not installed
            continue


def _forked_pytest(workdir: Path, tests: list[str], timeout: float) -> int | None:
    """Run pytest on ``tests`` in a forked child working in ``workdir``; ``None`` on timeout."""
    pid = os.fork()
    if pid == 0:  # the child: import the package fresh from workdir, run, exit
        code = 3
        try:
            os.chdir(workdir)
            sys.path.insert(0, str(workdir))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.environ.pop("CI", None)
            import pytest

            # Preloaded plugin modules cannot be assertion-rewritten: expected, not an error.
            quiet = "ignore::pytest.PytestAssertRewriteWarning"
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-W", quiet, *tests]))
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def _equivalents() -> dict[str, dict[tuple[str, str, str], str]]:
    path = ROOT / "tools" / "mutation_equivalent.toml"
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    out: dict[str, dict[tuple[str, str, str], str]] = {}
    for module, entries in data.items():
        out[module] = {
            (e["where"], e["operator"], e["original"]): e["reason"] for e in entries["mutant"]
        }
    return out


def run_module(module: str, jobs: int, fork: bool = False) -> dict[str, object]:
    tests = [t for t in TARGETS[module] if (ROOT / t).exists()]
    source = (ROOT / module).read_text()
    found = mutants_of(source)
    equivalent = _equivalents().get(module, {})
    work = Path(tempfile.mkdtemp(prefix="mutate-"))
    slots = [work / f"w{i}" for i in range(jobs)]
    for slot in slots:
        _copy_tree(slot)
    code, baseline = _pytest(slots[0], tests, timeout=600)
    if code != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"{module}: the unmutated tests fail ({tests}); fix them first")
    timeout = baseline * 5 + 20

    free = list(slots)
    results: dict[int, str] = {}

    if fork:
        slot = slots[0]
        if _forked_pytest(slot, tests, timeout) != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise SystemExit(f"{module}: the unmutated tests fail in a forked run")
        for mutant in found:
            target = slot / module
            try:
                target.write_text(mutated(source, mutant.index))
            except Exception:
                results[mutant.index] = "invalid"
                continue
            try:
                rc = _forked_pytest(slot, tests, timeout)
            finally:
                target.write_text(source)
            results[mutant.index] = (
                "timeout" if rc is None else ("survived" if rc == 0 else "killed")
            )

    def one(mutant: Mutant) -> tuple[int, str]:
        slot = free.pop()
        try:
            target = slot / module
            try:
                target.write_text(mutated(source, mutant.index))
            except Exception:
                return mutant.index, "invalid"
            rc, _ = _pytest(slot, tests, timeout)
            return mutant.index, "timeout" if rc is None else ("survived" if rc == 0 else "killed")
        finally:
            (slot / module).write_text(source)
            free.append(slot)

    if not fork:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for index, outcome in pool.map(one, found):
                results[index] = outcome
    shutil.rmtree(work, ignore_errors=True)

    survivors = []
    equivalents = []
    killed = 0
    for mutant in found:
        outcome = results[mutant.index]
        if outcome in ("killed", "timeout"):
            killed += 1
        elif outcome == "survived":
            entry = {
                "line": mutant.line,
                "where": mutant.where,
                "operator": mutant.operator,
                "original": mutant.original,
            }
            if mutant.key() in equivalent:
                entry["reason"] = equivalent[mutant.key()]
                equivalents.append(entry)
            else:
                survivors.append(entry)
    counted = len(found) - len(equivalents) - sum(1 for r in results.values() if r == "invalid")
    rate = killed / counted if counted else 1.0
    return {
        "module": module,
        "tests": tests,
        "mutants": len(found),
        "killed": killed,
        "equivalent": equivalents,
        "survived": survivors,
        "kill_rate": round(rate, 4),
        "seconds": round(baseline, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: every target)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--fork",
        action="store_true",
        help="run each mutant in a forked child of a process that preloaded the heavy "
        "dependencies (POSIX; sequential; about half the start-up cost per mutant)",
    )
    parser.add_argument("--json", type=Path, help="write the full results here")
    parser.add_argument("--list", action="store_true", help="list the mutants only")
    parser.add_argument(
        "--fail-under", type=float, default=0.0, help="exit 1 when a module's kill rate is lower"
    )
    args = parser.parse_args(argv)
    modules = args.modules or list(TARGETS)
    if args.list:
        for module in modules:
            for m in mutants_of((ROOT / module).read_text()):
                print(f"{module}:{m.line} [{m.where}] {m.operator}: {m.original}")
        return 0
    if args.fork:
        _preload()
    reports = []
    failed = False
    for module in modules:
        report = run_module(module, args.jobs, fork=args.fork)
        reports.append(report)
        rate = float(report["kill_rate"])  # type: ignore[arg-type]
        survived = report["survived"]
        assert isinstance(survived, list)
        print(
            f"{module}: {report['killed']}/{report['mutants']} killed, "
            f"{len(report['equivalent'])} equivalent, "  # type: ignore[arg-type]
            f"{len(survived)} survived: kill rate {rate:.1%}",
            flush=True,
        )
        for s in survived:
            print(f"    survived line {s['line']} [{s['where']}] {s['operator']}: {s['original']}")
        failed = failed or rate < args.fail_under
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
