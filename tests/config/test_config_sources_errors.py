"""Configuration files and directories that cannot be used: the YAML layer, a config
directory that is not one, unreadable files, a settings file that is a directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.config import ConfigError, ConfigManager


def _problems(tmp_path: Path, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        ConfigManager("development", cwd=tmp_path, environ=environ or {}).load_config()
    return [(p.key, p.rule) for p in info.value.problems]


def test_yaml_layer_is_listed_and_applied(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.development.yaml").write_text(
        "redis:\n  timeout: 0.7\n", encoding="utf-8"
    )
    manager = ConfigManager("development", cwd=tmp_path, environ={})
    assert manager.load_config().redis.timeout == 0.7
    kinds = [s.kind for s in manager.sources()]
    assert "yaml" in kinds


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("redis: [unclosed\n", "is not valid YAML at line"),
        ("- just\n- a list\n", ""),
    ],
)
def test_broken_yaml(tmp_path: Path, text: str, rule: str) -> None:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "config.development.yaml"
    path.write_text(text, encoding="utf-8")
    problems = _problems(tmp_path)
    assert problems[0][0] == str(path)
    assert problems[0][1].startswith(rule)


def test_an_empty_yaml_file_is_nothing(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.development.yaml").write_text("", encoding="utf-8")
    assert ConfigManager("development", cwd=tmp_path, environ={}).load_config().env == (
        "development"
    )


def test_config_dir_variable_must_name_a_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as info:
        ConfigManager("development", environ={"AI_TRADER_CONFIG_DIR": str(missing)}).load_config()
    problems = [(p.key, p.rule) for p in info.value.problems]
    assert problems == [("AI_TRADER_CONFIG_DIR", f"names {missing}, which is not a directory")]


def test_config_dir_variable_is_read(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "settings.toml").write_text("[default.redis]\ntimeout = 0.9\n", encoding="utf-8")
    config = ConfigManager(
        "development", environ={"AI_TRADER_CONFIG_DIR": str(other)}
    ).load_config()
    assert config.redis.timeout == 0.9


def test_a_settings_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_bytes(b'[default.redis]\nkey_prefix = "\xff\xfe"\n')
    problems = _problems(tmp_path)
    assert problems[0][0].endswith("settings.toml")
    assert "not UTF-8" in problems[0][1]
