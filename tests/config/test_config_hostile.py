"""Hostile configuration: dynaconf directives, bounds, masking by key, broken files, finding the
settings, unknown sections and boolean spellings."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from resilient import ConfigError, sanitize
from resilient._cli import main as cli_main
from resilient._core.sanitize import mask_url, sanitize_obj
from resilient.config import ConfigManager, current_config, switches
from resilient.config._schema import SECTIONS

REPO = Path(__file__).resolve().parents[2]
NOWHERE = Path("/nonexistent-resilient-dir")
# dynaconf's converter tokens: the class of directive prefixes.
DIRECTIVES = (
    "@str",
    "@int",
    "@float",
    "@bool",
    "@json",
    "@format",
    "@jinja",
    "@del",
    "@merge",
    "@merge_unique",
    "@insert",
    "@get",
    "@read_file",
    "@upper",
    "@lower",
    "@title",
    "@strip",
    "@split",
    "@note",
    "@null",
    "@empty",
    "@reset",
)


def load(env: str = "development", cwd: Path | None = None, **environ: str) -> ConfigManager:
    return ConfigManager(env, cwd=cwd or NOWHERE, environ=environ)


def _numeric_fields() -> list[tuple[str, str, type]]:
    out = []
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            if hints[f.name] in (int, float):
                out.append((section, f.name, hints[f.name]))
    return out


def _bool_fields() -> list[tuple[str, str]]:
    return [
        (section, f.name)
        for section, cls in SECTIONS.items()
        for f in fields(cls)
        if get_type_hints(cls)[f.name] is bool
    ]


NUMERIC = _numeric_fields()
DURATIONS = [(s, k, t) for s, k, t in NUMERIC if t is float]
BOOLS = _bool_fields()
secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\\"),
    min_size=6,
    max_size=30,
).map(lambda s: f"Zq{s}9")


# ---- 12.6 dynaconf directives -----------------------------------------------------------


@hsettings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    directive=st.sampled_from(DIRECTIVES),
    value=secret_text,
    var=st.sampled_from(
        [
            ("AI_TRADER_DATABASE__PASSWORD", "database", "password"),
            ("AI_TRADER_DATABASE_PASSWORD", "database", "password"),
            ("AI_TRADER_BOT__API_KEY", "bot", "api_key"),
            ("AI_TRADER_BOT__SECRET", "bot", "secret"),
            ("AI_TRADER_BOT__AUTH_TOKEN", "bot", "auth_token"),
            ("AI_TRADER_BOT__DSN", "bot", "dsn"),
        ]
    ),
)
def test_secret_with_directive_taken_verbatim(
    directive: str, value: str, var: tuple[str, str, str]
) -> None:
    """A secret variable starting with any dynaconf directive is kept exactly as written."""
    name, section, key = var
    raw = f"{directive} {value}"
    cfg = load("staging", AI_TRADER_EXTRA_SECTIONS="bot", **{name: raw}).load_config()
    got = cfg.database.password if section == "database" else cfg.section(section)[key]
    assert got == raw


# no URL delimiters: their fragments would be registered as secrets for the whole session
url_secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\\@/?#:[]"),
    min_size=6,
    max_size=30,
).map(lambda s: f"Zq{s}9")


@hsettings(max_examples=60)
@given(directive=st.sampled_from(DIRECTIVES), password=url_secret_text)
def test_redis_url_and_dsn_with_directive_verbatim(directive: str, password: str) -> None:
    """A URL with a password (redis.url, a service DSN/url) is never reinterpreted."""
    url = f"{directive} redis://:{password}@cache.internal:6379/0"
    cfg = load("staging", AI_TRADER_REDIS__URL=f"redis://:{password}@h:1/0").load_config()
    assert cfg.redis.url == f"redis://:{password}@h:1/0"
    cfg = load(
        "staging", AI_TRADER_EXTRA_SECTIONS="bot", AI_TRADER_BOT__BROKER_URL=url
    ).load_config()
    assert cfg.section("bot")["broker_url"] == url


def _failing_values() -> st.SearchStrategy[tuple[str, str]]:
    junk = st.text(alphabet="abcxyz{}[]:,'\" ", min_size=1, max_size=12).filter(
        lambda s: s.strip() and not s.strip().lstrip("-").isdigit()
    )
    return st.one_of(
        st.tuples(st.sampled_from(["@int", "@float"]), junk),
        st.tuples(st.just("@json"), st.sampled_from(["{", "[1,", '{"a": ', "{'a' 1}", "nul"])),
        st.tuples(st.just("@format"), st.sampled_from(["{this.nope}", "{env[NOPE_X]}", "{"])),
        st.tuples(st.just("@get"), st.sampled_from(["nope.nothing", "resilience.nope"])),
        st.tuples(st.just("@read_file"), st.just("/nonexistent/resilient-file")),
    )


@hsettings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=_failing_values(),
    key=st.sampled_from([*NUMERIC, ("features", "debug", bool), ("database", "ssl_mode", str)]),
)
def test_failing_directive_names_key_and_variable(
    case: tuple[str, str], key: tuple[str, str, type]
) -> None:
    """A non-secret value whose directive fails is a ConfigError naming the key and variable."""
    directive, value = case
    section, name, _ = key
    var = f"AI_TRADER_{section.upper()}__{name.upper()}"
    with pytest.raises(ConfigError) as info:
        load("staging", **{var: f"{directive} {value}"}).load_config()
    text = str(info.value)
    assert var in text and f"{section}.{name}" in text


@pytest.mark.parametrize("digits", [4400, 5000, 20000])
def test_huge_digit_value_is_config_error(digits: int) -> None:
    """A number with thousands of digits is a ConfigError naming the key, not a ValueError."""
    var = "AI_TRADER_TRADING__MAX_ORDER_SIZE"
    with pytest.raises(ConfigError) as info:
        load("staging", **{var: "9" * digits}).load_config()
    assert var in str(info.value) and "trading.max_order_size" in str(info.value)


def test_directives_still_work_on_ordinary_keys() -> None:
    """A well-formed directive on a non-secret key is applied as dynaconf users expect."""
    cfg = load(
        "staging",
        AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS="@int 7",
        AI_TRADER_DATABASE__NAME="@format {this.database.user}_db",
        AI_TRADER_TRADING__MAX_ORDER_SIZE="@float 250",
    ).load_config()
    assert cfg.resilience.retry_max_attempts == 7
    assert cfg.database.name == "ai_trader_db"
    assert cfg.trading.max_order_size == 250.0


@pytest.mark.parametrize("fmt", ["yaml", "toml", "secrets"])
def test_directives_in_files(tmp_path: Path, fmt: str) -> None:
    """In YAML and TOML files, secrets with directives are verbatim; a failing directive on
    another key names the key and the file."""
    secret = "@json S3cr3t-p@ss/w0rd{"
    if fmt == "yaml":
        (tmp_path / "config").mkdir()
        path = tmp_path / "config" / "config.staging.yaml"
        path.write_text(f"database:\n  password: '{secret}'\n")
        bad = "resilience:\n  retry_max_attempts: '@int abc'\n"
    else:
        path = tmp_path / ("settings.toml" if fmt == "toml" else ".secrets.toml")
        path.write_text(f"[staging.database]\npassword = '{secret}'\n")
        bad = "[staging.resilience]\nretry_max_attempts = '@int abc'\n"
    cfg = load("staging", cwd=tmp_path).load_config()
    assert cfg.database.password == secret
    path.write_text(bad)
    with pytest.raises(ConfigError) as info:
        load("staging", cwd=tmp_path).load_config()
    assert "resilience.retry_max_attempts" in str(info.value) and path.name in str(info.value)


def _run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AI_TRADER_")}
    full.update(env)
    full["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "resilient", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "password", ["@json S3cr3t-p@ss/w0rd{", "@int S3cr3tpass", "@format {S3cr3tpass}"]
)
def test_cli_config_and_health_never_crash_on_directive_password(
    tmp_path: Path, password: str
) -> None:
    """`resilient config` and `resilient health --json` run and never print the password."""
    env = {"AI_TRADER_ENV": "staging", "AI_TRADER_DATABASE__PASSWORD": password}
    for args in (("config",), ("config", "--json"), ("health", "--json")):
        proc = _run_cli(*args, env=env, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, out
        assert "S3cr3t" not in out, out
    assert proc.returncode in (0, 1, 2)


# ---- 12.7 bounds ------------------------------------------------------------------------


def _upper(section: str, name: str) -> float:
    f = next(f for f in fields(SECTIONS[section]) if f.name == name)
    return float(f.metadata["le"])


@st.composite
def hostile_setting(draw: st.DrawFn) -> tuple[str, str, type, float]:
    section, name, typ = draw(st.sampled_from(NUMERIC))
    high = _upper(section, name)
    value = draw(
        st.one_of(
            st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1.0, -1e-9]),
            st.floats(min_value=high * 1.001 + 1, max_value=1e308),
            st.floats(max_value=-1e-12, min_value=-1e308),
        )
    )
    return section, name, typ, value


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile_setting())
def test_every_numeric_key_is_bounded_at_load(case: tuple[str, str, type, float]) -> None:
    """Huge, infinite, NaN or negative values of any duration or size are refused at load."""
    section, name, typ, value = case
    var = f"AI_TRADER_{section.upper()}__{name.upper()}"
    text = repr(value) if math.isfinite(value) else str(value)
    if typ is int and math.isfinite(value):
        text = str(math.floor(value))  # -1e-9 is -1, not 0 (0 is valid where ge=0)
    with pytest.raises(ConfigError) as info:
        load("staging", **{var: text}).load_config()
    assert f"{section}.{name}" in str(info.value)


def test_issue_example_order_timeout() -> None:
    """trading.default_order_timeout = 1e10 is refused (it made every sync order overflow)."""
    with pytest.raises(ConfigError, match=r"trading\.default_order_timeout"):
        load("staging", AI_TRADER_TRADING__DEFAULT_ORDER_TIMEOUT="1e10").load_config()


def test_every_numeric_field_declares_an_upper_bound() -> None:
    """Each duration and size in the schema has an upper bound, documented in the README."""
    readme = (REPO / "README.md").read_text()
    bounds = readme.split("### Bounds", 1)[1].split("\n## ", 1)[0]
    for section, name, _ in NUMERIC:
        f = next(f for f in fields(SECTIONS[section]) if f.name == name)
        assert f.metadata.get("le") is not None, f"{section}.{name} has no upper bound"
        assert f"`{section}.{name}`" in bounds, f"{section}.{name} missing from README bounds"


@hsettings(max_examples=200)
@given(
    value=st.one_of(
        st.sampled_from([math.inf, math.nan, 1e308, 1e10, -1.0]),
        st.floats(min_value=86_401, max_value=1e308),
    )
)
def test_decorators_refuse_hostile_durations(value: float) -> None:
    """timeout(), breaker(...) and retry(...) refuse huge, infinite and NaN durations."""
    from resilient import timeout
    from resilient.config._bounds import check_arguments

    with pytest.raises(ValueError):
        timeout(value)
    with pytest.raises(ValueError):
        check_arguments("breaker", {"reset_timeout": value}, "breaker 'x'")
    with pytest.raises(ValueError):
        check_arguments("retry", {"initial_delay": value}, "retry")


def test_decorator_bounds_accept_ordinary_values() -> None:
    """Ordinary arguments pass the decoration-time bounds unchanged."""
    from resilient import timeout
    from resilient.config._bounds import check_arguments

    timeout(30.0)
    check_arguments("breaker", {"reset_timeout": 60.0, "failure_threshold": 5}, "breaker 'x'")
    check_arguments("retry", {"initial_delay": 0.0, "max_delay": 30.0, "deadline": None}, "r")


# ---- 12.8 masking by key and URL fragments ---------------------------------------------


@hsettings(max_examples=100)
@given(
    value=st.one_of(
        st.integers(min_value=10_000, max_value=10**30),
        st.floats(min_value=10_000, max_value=1e30),
        st.lists(st.integers(min_value=10_000, max_value=10**12), min_size=1, max_size=3),
        st.binary(min_size=4, max_size=10),
    ),
    key=st.sampled_from(["api_key", "password", "secret", "token", "API_KEY", "private_key"]),
)
def test_sanitize_obj_masks_by_key_whatever_the_type(value: Any, key: str) -> None:
    """A value under a secret key is masked whatever its type."""
    out = sanitize_obj({"bot": {key: value, "name": "x"}})
    assert out["bot"][key] == "***"
    assert out["bot"]["name"] == "x"


def test_cli_config_json_masks_numeric_api_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An all-digit api_key is masked in `resilient config --json` and the table."""
    (tmp_path / "settings.toml").write_text(
        '[default]\nextra_sections = ["bot"]\n[default.bot]\napi_key = 918273645501\n'
    )
    monkeypatch.chdir(tmp_path)
    for args in (["config", "--env", "staging", "--json"], ["config", "--env", "staging"]):
        assert cli_main(args) == 0
        out = capsys.readouterr().out
        assert "918273645501" not in out and "***" in out


def _delimited_password() -> st.SearchStrategy[str]:
    piece = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=5, max_size=10)
    return st.tuples(piece, st.sampled_from("@/?#:"), piece).map(
        lambda t: f"Zq{t[0]}{t[1]}Zr{t[2]}"  # each fragment distinctive: registered for good
    )


@hsettings(max_examples=150)
@given(password=_delimited_password(), user=st.sampled_from(["", "default"]))
def test_url_fragments_redis_and_asyncpg_derive_are_masked(password: str, user: str) -> None:
    """Whatever redis-py, urllib or asyncpg derive from a URL with an unencoded delimiter in its
    password is masked once the URL is known as a secret."""
    from urllib.parse import urlsplit

    from redis.connection import parse_url

    from resilient._core.sanitize import register_secrets, url_secret_parts

    url = f"redis://{user}:{password}@127.0.0.1:6390/0"
    register_secrets(url_secret_parts(url))
    derived: list[str] = []
    try:
        derived += [str(v) for v in parse_url(url).values()]
    except ValueError as exc:
        derived.append(str(exc))
    parts = urlsplit(url.replace("redis://", "postgresql://"))
    derived += [str(x) for x in (parts.netloc, parts.path, parts.query, parts.fragment)]
    derived += [str(parts.hostname), str(parts.username), str(parts.password)]
    for text in derived:
        shown = sanitize(f"Error connecting to {text}")
        for piece in password.replace("@", " ").replace("/", " ").replace("?", " ").split():
            for frag in piece.replace("#", " ").replace(":", " ").split():
                if len(frag) >= 4:
                    assert frag not in shown, (text, shown)
    assert password not in mask_url(url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sep", ["/", "@", "?", "#"])
def test_cli_outputs_mask_redis_password_fragments(tmp_path: Path, sep: str) -> None:
    """health, health --json and breakers never show a fragment of a Redis password holding an
    unencoded delimiter (the server is unreachable)."""
    url = f"redis://:tr0ub4dor{sep}secretpart@127.0.0.1:{_free_port()}/0"
    env = {"AI_TRADER_ENV": "staging", "AI_TRADER_REDIS__URL": url}
    for args in (("health",), ("health", "--json"), ("breakers",)):
        proc = _run_cli(*args, env=env, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, out
        assert "tr0ub4dor" not in out and "secretpart" not in out, out


# ---- 12.9 broken TOML files ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["settings.toml", ".secrets.toml"])
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[default]\nlog_level = \n", 2),
        ("[default.database]\nport = 5432\npassword = 'unterminated\n", 3),
        ("[default]\n[default]\n", 2),
        ("a = 1\n\n\nb = [1, 2\n", 4),
    ],
)
def test_broken_toml_is_config_error_with_file_and_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    """A TOML syntax error is a ConfigError naming the file and the line."""
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load("staging", cwd=tmp_path).load_config()
    msg = str(info.value)
    assert name in msg and f"line {line}" in msg
    assert "unterminated" not in msg


# ---- 14.7 finding the settings; configure(); --sources -----------------------------------


def test_config_dir_variable(tmp_path: Path) -> None:
    """AI_TRADER_CONFIG_DIR names the directory of settings.toml, .secrets.toml and config/."""
    (tmp_path / "settings.toml").write_text("[staging.resilience]\nretry_max_attempts = 9\n")
    (tmp_path / ".secrets.toml").write_text("[staging.database]\npassword = 'from-secrets'\n")
    cfg = ConfigManager("staging", environ={"AI_TRADER_CONFIG_DIR": str(tmp_path)}).load_config()
    assert cfg.resilience.retry_max_attempts == 9
    assert cfg.database.password == "from-secrets"


def test_settings_files_variable_layers_in_order(tmp_path: Path) -> None:
    """AI_TRADER_SETTINGS_FILES lists settings files, later ones winning."""
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text("[default.resilience]\nretry_max_attempts = 4\nretry_max_delay = 20.0\n")
    b.write_text("[default.resilience]\nretry_max_attempts = 6\n")
    environ = {"AI_TRADER_SETTINGS_FILES": f"{a}{os.pathsep}{b}"}
    cfg = ConfigManager("staging", environ=environ).load_config()
    assert cfg.resilience.retry_max_attempts == 6 and cfg.resilience.retry_max_delay == 20.0
    with pytest.raises(ConfigError, match="AI_TRADER_SETTINGS_FILES"):
        ConfigManager(
            "staging", environ={"AI_TRADER_SETTINGS_FILES": str(tmp_path / "missing.toml")}
        ).load_config()


def test_settings_found_from_another_working_directory(tmp_path: Path) -> None:
    """Run from elsewhere (systemd, cron), the variable still finds the settings."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "settings.toml").write_text("[staging.trading]\ndefault_order_timeout = 12.0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run_cli(
        "config",
        "--json",
        env={"AI_TRADER_ENV": "staging", "AI_TRADER_CONFIG_DIR": str(conf)},
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trading"]["default_order_timeout"] == 12.0


@pytest.fixture
def restore_process_config() -> Iterator[None]:
    yield
    from resilient.config import configure

    configure()


def test_configure_sets_process_configuration_decorators_follow(
    tmp_path: Path, restore_process_config: None
) -> None:
    """configure(config_dir=...) replaces the process configuration; switches follow."""
    (tmp_path / "settings.toml").write_text(
        "[default.resilience]\ncircuit_breaker_enabled = false\nretry_max_attempts = 7\n"
    )
    from resilient.config import configure, reload_config

    before = switches.generation
    cfg = configure(config_dir=tmp_path)
    assert cfg is current_config()
    assert current_config().resilience.retry_max_attempts == 7
    assert switches.breaker_enabled is False and switches.generation > before
    assert reload_config().resilience.retry_max_attempts == 7  # reload keeps the choice
    configure()
    assert switches.breaker_enabled is True


def test_configure_refuses_invalid_and_keeps_running_config(
    tmp_path: Path, restore_process_config: None
) -> None:
    """An invalid configure() raises and leaves the running configuration in place."""
    from resilient.config import configure

    running = current_config()
    (tmp_path / "settings.toml").write_text("[default.resilience]\nretry_max_attempts = 0\n")
    with pytest.raises(ConfigError):
        configure(config_dir=tmp_path)
    assert current_config() is running


def test_cli_config_sources_lists_files_and_variables(tmp_path: Path) -> None:
    """`resilient config --sources` lists every file and variable in order, secrets masked."""
    (tmp_path / "settings.toml").write_text("[staging.resilience]\nretry_max_attempts = 4\n")
    (tmp_path / ".secrets.toml").write_text("[staging.database]\npassword = 'file-pass-77'\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.staging.yaml").write_text("trading:\n  max_order_size: 5.0\n")
    env = {
        "AI_TRADER_ENV": "staging",
        "AI_TRADER_DATABASE__PASSWORD": "Var-Pass-123456",
        "AI_TRADER_RESILIENCE__RETRY_MAX_DELAY": "12",
    }
    proc = _run_cli("config", "--sources", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    order = [
        out.index("resilient/config/settings.toml"),
        out.index(str(tmp_path / "settings.toml")),
        out.index(str(tmp_path / ".secrets.toml")),
        out.index("config.staging.yaml"),
        out.index("AI_TRADER_DATABASE__PASSWORD"),
        out.index("AI_TRADER_RESILIENCE__RETRY_MAX_DELAY"),
    ]
    assert order == sorted(order)
    assert "Var-Pass-123456" not in out and "file-pass-77" not in out
    assert "AI_TRADER_ENV" in out and "12" in out


# ---- 14.8 validate everything; unknown sections --------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "expect"),
    [
        ("AI_TRADER_SERVICES__DEFAULTS__FAILURE_TRESHOLD", "3", "failure_threshold"),
        ("AI_TRADER_SERVICES__MAIN__RATE_LIMIT", "200 per minit", "rate_limit"),
        ("AI_TRADER_SERVICES__MAIN__METHODS__GET_BARS__TIMEOUT", "-1", "timeout"),
        ("AI_TRADER_SERVICES__MAIN__TIMEOUT", "1e308", "services.main.timeout"),
        ("AI_TRADER_ALERTS__HIGH_ERROR_RATE__SEVERITY", "bogus", "severity"),
    ],
)
def test_cli_validate_checks_services(
    var: str,
    value: str,
    expect: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`resilient config --validate` refuses what the factory would refuse."""
    monkeypatch.setenv(var, value)
    assert cli_main(["config", "--env", "staging", "--validate"]) == 2
    assert expect in capsys.readouterr().err


def _typo(word: str, data: st.DataObject) -> str:
    i = data.draw(st.integers(0, len(word) - 1))
    op = data.draw(st.sampled_from(["drop", "swap", "double"]))
    if op == "drop":
        return word[:i] + word[i + 1 :]
    if op == "double":
        return word[:i] + word[i] + word[i:]
    j = min(i + 1, len(word) - 1)
    chars = list(word)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@hsettings(max_examples=150)
@given(data=st.data(), section=st.sampled_from(sorted(SECTIONS)))
def test_misspelled_section_variable_is_config_error(data: st.DataObject, section: str) -> None:
    """AI_TRADER_<typo>__KEY is refused with a did-you-mean, not silently dropped."""
    typo = _typo(section, data)
    if typo == section:
        return
    var = f"AI_TRADER_{typo.upper()}__SOME_KEY"
    with pytest.raises(ConfigError) as info:
        load("staging", **{var: "1"}).load_config()
    msg = str(info.value)
    assert var in msg and f"did you mean {section}" in msg


@pytest.mark.parametrize(
    "var", ["AI_TRADER_RESILENCE__RETRY_MAX_ATTEMPTS", "AI_TRADER_RESILENCE_RETRY_MAX_ATTEMPTS"]
)
def test_issue_example_resilence_typo(var: str) -> None:
    """The issue's AI_TRADER_RESILENCE__... (nested or flat form) is named with its fix."""
    with pytest.raises(ConfigError, match="did you mean resilience") as info:
        load("staging", **{var: "5"}).load_config()
    assert var in str(info.value)


def test_unknown_section_in_file_names_file(tmp_path: Path) -> None:
    """An unknown section in a settings file is refused, naming the file."""
    (tmp_path / "settings.toml").write_text("[default.tradng]\nmax_order_size = 1.0\n")
    with pytest.raises(ConfigError) as info:
        load("staging", cwd=tmp_path).load_config()
    assert "did you mean trading" in str(info.value) and "settings.toml" in str(info.value)


def test_declared_application_sections_are_accepted(tmp_path: Path) -> None:
    """An application's own sections are declared in extra_sections (file or variable)."""
    (tmp_path / "settings.toml").write_text(
        '[default]\nextra_sections = ["bot"]\n[default.bot]\nsymbols = ["AAPL"]\n'
    )
    cfg = load("staging", cwd=tmp_path).load_config()
    assert cfg.section("bot")["symbols"] == ["AAPL"]
    cfg = load(
        "staging", AI_TRADER_EXTRA_SECTIONS="bot, strategy", AI_TRADER_STRATEGY__NAME="x"
    ).load_config()
    assert cfg.section("strategy")["name"] == "x"
    with pytest.raises(ConfigError, match="extra_sections"):
        load("staging", AI_TRADER_BOT__NAME="x").load_config()


# ---- 14.9 booleans from variables -----------------------------------------------------------

TRUE_WORDS = ["true", "1", "yes", "on"]
FALSE_WORDS = ["false", "0", "no", "off"]


def _cased(word: str, data: st.DataObject) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))


@hsettings(max_examples=200)
@given(data=st.data(), key=st.sampled_from(BOOLS), truth=st.booleans())
def test_boolean_spellings_any_case(data: st.DataObject, key: tuple[str, str], truth: bool) -> None:
    """true/false, 1/0, yes/no, on/off in any case set a boolean from a variable."""
    section, name = key
    word = _cased(data.draw(st.sampled_from(TRUE_WORDS if truth else FALSE_WORDS)), data)
    var = f"AI_TRADER_{section.upper()}__{name.upper()}"
    environ = {var: f" {word} "}
    if (section, name) == ("features", "live_trading_enabled") and truth:
        environ["AI_TRADER_FEATURES__PAPER_TRADING_ENABLED"] = "no"
    if (section, name) == ("resilience", "circuit_breaker_shared") and truth:
        environ["AI_TRADER_REDIS__URL"] = "redis://127.0.0.1:6379/0"
    cfg = load("staging", **environ).load_config()
    assert getattr(getattr(cfg, section), name) is truth


@hsettings(max_examples=100)
@given(
    key=st.sampled_from(BOOLS),
    word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6).filter(
        lambda w: w.lower() not in {*TRUE_WORDS, *FALSE_WORDS}
    ),
)
def test_other_boolean_words_name_the_key(key: tuple[str, str], word: str) -> None:
    """Any other word is a ConfigError naming the key and the variable."""
    section, name = key
    var = f"AI_TRADER_{section.upper()}__{name.upper()}"
    with pytest.raises(ConfigError) as info:
        load("staging", **{var: word}).load_config()
    assert var in str(info.value) and f"{section}.{name}" in str(info.value)


SERVICE_NUMBERS = [
    "timeout",
    "order_timeout",
    "reset_timeout",
    "rate_limit_max_wait",
    "initial_delay",
    "max_delay",
    "cache_ttl",
    "failure_threshold",
    "max_attempts",
]


@hsettings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(SERVICE_NUMBERS),
    where=st.sampled_from(["DEFAULTS", "MAIN", "MAIN__METHODS__GET_BARS"]),
    value=st.one_of(
        st.sampled_from(["inf", "1e308", "1e10", "nan"]),
        st.floats(min_value=3e6, max_value=1e300).map(repr),
    ),
)
def test_service_durations_and_sizes_are_bounded(name: str, where: str, value: str) -> None:
    """A huge value of any numeric services key is refused by the factory and --validate."""
    from resilient.integration import ResilienceFactory

    if where.endswith("GET_BARS") and name == "rate_limit_max_wait":
        return  # a service key, not a method one
    var = f"AI_TRADER_SERVICES__{where}__{name.upper()}"
    cfg = load("staging", **{var: value}).load_config()
    with pytest.raises(ConfigError) as info:
        ResilienceFactory(cfg, logging=False, database=False)
    assert name in str(info.value)


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_huge_number_in_a_file_names_the_file(tmp_path: Path, fmt: str) -> None:
    """A 5,000-digit number in a YAML or TOML file is a ConfigError naming the file."""
    if fmt == "yaml":
        (tmp_path / "config").mkdir()
        path = tmp_path / "config" / "config.staging.yaml"
        path.write_text("trading:\n  max_order_size: " + "9" * 5000 + "\n")
    else:
        path = tmp_path / "settings.toml"
        path.write_text("[staging.trading]\nmax_order_size = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load("staging", cwd=tmp_path).load_config()
    assert path.name in str(info.value)


@pytest.mark.parametrize(
    ("word", "expected"), [("Yes", True), ("OFF", False), ("1", True), ("no", False)]
)
def test_service_booleans_from_variables(word: str, expected: bool) -> None:
    """services.<name>.resilience_enabled from a variable takes the same spellings."""
    from resilient.trading import service_settings

    cfg = load("staging", AI_TRADER_SERVICES__MAIN__RESILIENCE_ENABLED=word).load_config()
    assert service_settings(cfg, "main").resilience_enabled is expected
    with pytest.raises(ConfigError, match=r"services\.main\.resilience_enabled"):
        load("staging", AI_TRADER_SERVICES__MAIN__RESILIENCE_ENABLED="maybe").load_config()


@hsettings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    directive=st.sampled_from(DIRECTIVES),
    value=secret_text.filter(lambda v: "'" not in v),
    fmt=st.sampled_from(["toml", "secrets", "yaml"]),
    key=st.sampled_from([("database", "password"), ("bot", "api_key"), ("bot", "token")]),
)
def test_secret_with_directive_in_files_verbatim(
    tmp_path_factory: pytest.TempPathFactory,
    directive: str,
    value: str,
    fmt: str,
    key: tuple[str, str],
) -> None:
    """In TOML and YAML files too, a secret starting with any directive stays as written."""
    base = tmp_path_factory.mktemp("cfg")
    raw = f"{directive} {value}"
    section, name = key
    if fmt == "yaml":
        (base / "config").mkdir()
        (base / "config" / "config.staging.yaml").write_text(f"{section}:\n  {name}: '{raw}'\n")
    else:
        path = base / ("settings.toml" if fmt == "toml" else ".secrets.toml")
        path.write_text(f"[staging.{section}]\n{name} = '{raw}'\n")
    cfg = load("staging", base, AI_TRADER_EXTRA_SECTIONS="bot").load_config()
    got = cfg.database.password if section == "database" else cfg.section(section)[name]
    assert got == raw
