"""The project's deploy command keeps out of the bot's secrets: it gets the pipeline child's allowlisted
environment, the model's location and only the variables the project declares in ``[deploy] env``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.settings import ENV_PREFIX, Settings
from pipeline.deploy import deploy_environment
from pipeline.run import run_pipeline
from pipeline.spec import BOT_SETTING_PREFIXES, SpecError, load_project

# Fake secrets, as the bot would hold them in its environment.
BOT_SECRETS = {
    "GITHUB_TOKEN": "ghp_fake_github_token_1234",
    "GITHUB_APP_PRIVATE_KEY": "fake-pem-key-5678",
    "GITHUB_WEBHOOK_SECRET": "fake-github-hook-secret",
    "SLACK_BOT_TOKEN": "xoxb-fake-slack-token",
    "SLACK_SIGNING_SECRET": "fake-slack-signing-secret",
    "AZURE_DEVOPS_EXT_PAT": "fake-azure-pat",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password",
    "MLOPS_STATE_URL": "postgresql+psycopg://bot:fake-db-password@db/state",
}
ARTIFACT = Path("/registry/m/v3")  # never read: only its path is passed on


@pytest.fixture
def registry(embedded_registry):
    return embedded_registry


def _with_deploy(project, table: str) -> None:
    path = project / "mlops.toml"
    path.write_text(path.read_text() + "\n[deploy]\n" + table)


def _variables(dump: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)


def test_deploy_command_sees_declared_variables_and_none_of_the_bots_secrets(
        tiny_project, registry, clock, tmp_path, monkeypatch):
    for name, value in BOT_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", "/home/dev/.kube/config")
    monkeypatch.setenv("AWS_PROFILE", "staging")
    monkeypatch.setenv("UNDECLARED_TOOL_PASSWORD", "fake-undeclared-password")
    dump = tmp_path / "deploy-env.txt"
    _with_deploy(tiny_project, f'command = "env > {dump}"\nenv = ["KUBECONFIG", "AWS_PROFILE"]\n')

    result = run_pipeline(tiny_project, registry, clock=clock)

    assert result.promoted, result.error
    seen = dump.read_text()
    for value in [*BOT_SECRETS.values(), "fake-undeclared-password"]:
        assert value not in seen
    variables = _variables(seen)
    assert variables["KUBECONFIG"] == "/home/dev/.kube/config" and variables["AWS_PROFILE"] == "staging"
    assert variables["MLOPS_MODEL_VERSION"] == "1" and variables["MLOPS_MODEL_NAME"] == "tiny"
    assert variables["MLOPS_MODEL_PATH"] == str(registry.get("tiny", 1).path / "model.skops")
    assert "PATH" in variables  # the shell still finds the project's tools


def test_every_setting_of_the_bot_is_kept_from_the_deploy_command():
    bot_environment = {}
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias if isinstance(field.validation_alias, str) else ENV_PREFIX + name.upper()
        bot_environment[variable] = f"secret-of-{variable}"
    env = deploy_environment(model="m", version=3, artifact=ARTIFACT, declared=(),
                             environ={**bot_environment, "PATH": "/usr/bin", "LANG": "C.UTF-8"})
    assert not [value for value in env.values() if value.startswith("secret-of-")]
    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8"
    assert env["MLOPS_MODEL_VERSION"] == "3"


def test_the_bots_settings_all_use_a_prefix_that_deploy_env_refuses():
    # A new setting under a new prefix would otherwise be declarable in [deploy] env.
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias if isinstance(field.validation_alias, str) else ENV_PREFIX + name.upper()
        assert variable.startswith(BOT_SETTING_PREFIXES), variable


def test_a_declared_variable_the_bot_lacks_is_left_out_and_logged(caplog, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.deploy"):
        env = deploy_environment(model="m", version=1, artifact=ARTIFACT, declared=["KUBECONFIG"],
                                 environ={"PATH": "/bin"})
    assert "KUBECONFIG" not in env
    assert "[deploy] env names KUBECONFIG, not set in the bot's environment" in caplog.text


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ('["GITHUB_TOKEN"]', "'deploy.env': 'GITHUB_TOKEN' is one of the bot's own settings"),
        ('["slack_bot_token"]', "'deploy.env': 'slack_bot_token' is one of the bot's own settings"),
        ('["MLOPS_STATE_URL"]', "'deploy.env': 'MLOPS_STATE_URL' is one of the bot's own settings"),
        ('["KUBECONFIG=/etc/kube"]', "not an environment variable name (list names only; the value comes from"),
        ('["KUBE CONFIG"]', "'deploy.env': 'KUBE CONFIG' is not an environment variable name"),
        ('["1PASSWORD"]', "'deploy.env': '1PASSWORD' is not an environment variable name"),
        ('["AWS_PROFILE", "AWS_PROFILE"]', "'deploy.env': lists 'AWS_PROFILE' more than once"),
        ('"KUBECONFIG"', "'deploy.env': Input should be a valid list"),
    ],
)
def test_a_bad_deploy_env_is_one_line_naming_the_file_and_key(tiny_project, declared, message):
    _with_deploy(tiny_project, f"env = {declared}\n")
    with pytest.raises(SpecError) as caught:
        load_project(tiny_project)
    text = str(caught.value)
    assert message in text and "mlops.toml" in text and "\n" not in text


def test_a_good_deploy_env_is_read(tiny_project):
    _with_deploy(tiny_project, 'env = ["KUBECONFIG", "AWS_PROFILE"]\n')
    assert load_project(tiny_project).deploy.env == ["KUBECONFIG", "AWS_PROFILE"]
