"""Settings: every one documented, the example file loads to the defaults, bad values are named."""

from __future__ import annotations

import re

import pytest

from bot.settings import Settings, SettingsError, env_name, load_settings
from tests.conftest import REPO

VARIABLES = [env_name(name) for name in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_every_setting_is_in_env_example_and_the_readme():
    example = (REPO / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    for variable in VARIABLES:
        assert re.search(rf"^#? ?{variable}=", example, re.M), f"{variable} missing from .env.example"
        assert f"| `{variable}` |" in readme, f"{variable} missing from the README's settings table"


def test_env_example_loads_to_the_defaults(clean_env):
    (clean_env / "custom.env").write_text((REPO / ".env.example").read_text())
    loaded = load_settings(clean_env / "custom.env")
    assert loaded.model_dump() == Settings(_env_file=None).model_dump()


def test_bad_values_name_the_variable_and_give_an_example(clean_env, monkeypatch):
    monkeypatch.setenv("MLOPS_MAX_COMMANDS_PER_COMMENT", "0")
    monkeypatch.setenv("MLOPS_COMMAND_PERMISSIONS", '{"deploy": "boss"}')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "MLOPS_MAX_COMMANDS_PER_COMMENT: Input should be greater than or equal to 1; e.g. MLOPS_MAX_COMMANDS_PER_COMMENT=5" in message
    assert "MLOPS_COMMAND_PERMISSIONS:" in message and "boss" in message


def test_secret_values_are_not_echoed(clean_env, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_URL", "postgresql://user:hunter2@db/state")
    monkeypatch.setenv("MLOPS_POLL_INTERVAL_S", "hunter2")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
