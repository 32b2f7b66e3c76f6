"""Developer sessions: tests, lint, typecheck, bench, demo, mutation."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "imports", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage and a fail-under gate."""
    session.install("-e", ".[dev]")
    session.run("coverage", "erase")
    # coverage starts before pytest: the package's pytest plugin imports it early.
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report", "--fail-under=95")


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the typing test file."""
    session.install("-e", ".[dev]")
    session.run("mypy", "resilient", "tests/typing")


@nox.session(python=PY)
def imports(session: nox.Session) -> None:
    """The layer contracts of pyproject.toml ([tool.importlinter])."""
    session.install("-e", ".[dev]")
    session.run("lint-imports")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Per-call overhead against a raw call and the peer libraries, in one run."""
    session.install("-e", ".[dev]")
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/data.py", *session.posargs)
    session.run("python", "bench/scale.py", *session.posargs)


@nox.session(python=PY)
def demo(session: nox.Session) -> None:
    """The demo on the embedded defaults."""
    session.install("-e", ".[dev]")
    session.run("resilient", "demo", *session.posargs)


@nox.session(python=PY)
def mutation(session: nox.Session) -> None:
    """Mutation testing of the safety-critical modules, each against its own tests
    (``tools/mutate.py``; equivalent mutants are listed in tools/mutation_equivalent.toml)."""
    session.install("-e", ".[dev]")
    session.run("python", "tools/mutate.py", "--fork", "--fail-under", "0.9", *session.posargs)
