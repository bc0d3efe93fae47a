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


# --- one error path: every setting, a wrong value, through the real command ------------------------

EXAMPLE_VARIABLES = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M)

# A value of the wrong kind for each setting; <file> is an existing file, <missing> a path that does not exist.
WRONG_VALUES = {
    "MLOPS_DATA_DIR": "<file>",
    "MLOPS_PROJECT_DIR": "<missing>",
    "MLOPS_LOG_LEVEL": "LOUD",
    "MLOPS_LOG_FORMAT": "xml",
    "MLOPS_STATE_URL": "foo://bar",
    "MLOPS_REPO_DIR": "<missing>",
    "MLOPS_WATCH_BRANCH": "two words",
    "MLOPS_PROJECT_PATHS": "{bad",
    "MLOPS_PROJECT_PATH": "../outside",
    "MLOPS_POLL_INTERVAL_S": "not-a-number",
    "MLOPS_MONITOR_INTERVAL_S": "not-a-number",
    "MLOPS_DELIVER_INTERVAL_S": "not-a-number",
    "MLOPS_DIGEST_CRON": "every morning",
    "MLOPS_TAKEOVER_S": "not-a-number",
    "MLOPS_WORK_SHARING": "everyone",
    "MLOPS_MONITOR_DIR": "<file>",
    "MLOPS_LABELS_DIR": "<file>",
    "MLOPS_LOG_FILE": "<file>/x.log",
    "MLOPS_PRODUCTION_ALIAS": "latest",
    "MLOPS_CANDIDATE_ALIAS": "has space",
    "MLOPS_DRIFT_MIN_SEVERITY": "extreme",
    "MLOPS_DRIFT_COOLDOWN_S": "not-a-number",
    "MLOPS_MAX_COMMANDS_PER_COMMENT": "not-a-number",
    "MLOPS_COMMAND_PERMISSIONS": "{bad",
    "MLOPS_TICKET_PATTERNS": '["(unclosed"]',
    "MLOPS_HOST": "not a host",
    "MLOPS_PORT": "not-a-number",
    "MLOPS_WEBHOOK_MAX_BYTES": "not-a-number",
    "GITHUB_REPOSITORY": "not-owner-slash-name",
    "GITHUB_API_URL": "api.github.com",
    "GITHUB_APP_ID": "my-app",
    "GITHUB_APP_PRIVATE_KEY": "not-a-key",
    "GITHUB_APP_INSTALLATION_ID": "not-a-number",
    "MLOPS_GITHUB_RATE_LIMIT_RESERVE": "not-a-number",
    "MLOPS_GITHUB_CYCLE_BUDGET": "not-a-number",
    "MLOPS_GITHUB_TIMEOUT_S": "not-a-number",
    "MLOPS_GITHUB_WORKFLOW": "train",
    "MLOPS_GITHUB_PROJECT": "https://github.com/acme/model/issues/3",
    "MLOPS_GITHUB_PROJECT_STATUSES": '{"done": "Shipped"}',
    "MLOPS_SLACK_API_URL": "slack.com/api",
    "MLOPS_SLACK_CHANNELS": "not json",
    "MLOPS_SLACK_MENTION_GROUP": "two words",
    "MLOPS_SLACK_PROJECT_CHANNELS": "{bad",
    "MLOPS_SLACK_PERMISSIONS": "{bad",
    "AZURE_DEVOPS_ORG_URL": "dev.azure.com/acme",
    "AZURE_DEVOPS_PROJECT": "ml/platform",
    "MLOPS_AZURE_PROCESS": "Waterfall",
    "MLOPS_AZURE_PIPELINE_ID": "not-a-number",
    "MLOPS_AZURE_PERMISSIONS": "{bad",
}
# Settings that take any text, so no value is of the wrong kind; the service they name judges them
# (and `mlops-bot doctor` asks it).
ANY_TEXT = {
    "MLOPS_BOT_NAME": "a user name on whichever service the bot speaks on",
    "GITHUB_WEBHOOK_SECRET": "a secret: any text the webhook is configured with",
    "GITHUB_TOKEN": "a secret whose form GitHub changes (classic, fine-grained, App tokens); GitHub judges it",
    "SLACK_BOT_TOKEN": "a secret; Slack judges it (auth.test in doctor)",
    "SLACK_SIGNING_SECRET": "a secret: any text Slack shows for the app",
    "AZURE_DEVOPS_EXT_PAT": "a secret; Azure DevOps judges it",
    "MLOPS_AZURE_WORK_ITEM_TYPE": "a process may define work item types of any name",
    "MLOPS_AZURE_AREA_PATH": "area paths are the project's own names, any text; Azure Boards judges them",
    "MLOPS_AZURE_TEAM": "team names are any text; Azure DevOps judges them",
    "MLOPS_AZURE_REPOSITORY": "repository names are nearly any text; Azure Repos judges them",
    "AZURE_DEVOPS_WEBHOOK_SECRET": "a secret: any text the service hooks are configured with",
    "MLFLOW_TRACKING_URI": "MLflow judges its URIs (a server, databricks, azureml://, sqlite:///); doctor reaches it",
    "MLFLOW_REGISTRY_URI": "MLflow judges its URIs, as for MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN": "a secret: any text the MLflow server issued",
    "MLFLOW_TRACKING_USERNAME": "user names are any text; the MLflow server judges them",
    "MLFLOW_TRACKING_PASSWORD": "a secret: any text the MLflow server is configured with",
    "MLFLOW_WEBHOOK_SECRET": "a secret: any text the MLflow webhook is configured with",
}


def test_every_setting_in_env_example_has_a_wrong_value_or_a_reason():
    assert not set(WRONG_VALUES) & set(ANY_TEXT)
    assert set(EXAMPLE_VARIABLES) == set(WRONG_VALUES) | set(ANY_TEXT)


def _status(monkeypatch, tmp_path, **variables):
    from click.testing import CliRunner

    from bot.cli import cli

    monkeypatch.chdir(tmp_path)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(cli, ["status"])


@pytest.mark.parametrize("variable", sorted(WRONG_VALUES))
def test_a_wrong_value_is_one_line_naming_the_variable_exit_2(monkeypatch, tmp_path, variable):
    (tmp_path / "a-file").write_text("not a folder\n")
    value = WRONG_VALUES[variable].replace("<file>", str(tmp_path / "a-file"))
    value = value.replace("<missing>", str(tmp_path / "missing"))
    result = _status(monkeypatch, tmp_path, **{variable: value})
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"settings error: {variable}: "), lines
    assert "Traceback" not in result.output and result.stdout == ""
    if not WRONG_VALUES[variable].startswith("<"):  # a path is worth repeating; any other value may be a secret
        assert value not in result.stderr.split("; e.g. ")[0]


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("MLOPS_COMMAND_PERMISSIONS", "{bad", "expected a JSON object, but this is not valid JSON"),
        ("MLOPS_SLACK_CHANNELS", "not json", "expected a JSON object, but this is not valid JSON"),
        ("MLOPS_TICKET_PATTERNS", '["(unclosed"]',
         "pattern 1 is not a regular expression: missing ), unterminated subpattern"),
        ("MLOPS_STATE_URL", "foo://bar", "unknown database kind 'foo'"),
        ("MLOPS_STATE_URL", "mysql://user:hunter2@db/state", "the driver for mysql (MySQLdb) is not installed"),
        ("MLOPS_DATA_DIR", "/proc/x", "cannot use /proc/x"),
        ("MLOPS_DIGEST_CRON", "0 9 * * 1-8", "weekday '8' is not 0-7 or sun-sat"),
    ],
)
def test_the_failures_a_newcomer_met_are_one_line(monkeypatch, tmp_path, variable, value, said):
    result = _status(monkeypatch, tmp_path, **{variable: value})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and said in result.stderr
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_a_state_database_in_a_missing_folder_is_refused_not_created(monkeypatch, tmp_path):
    result = _status(monkeypatch, tmp_path, MLOPS_STATE_URL=f"sqlite:///{tmp_path}/nowhere/dir/state.db")
    assert result.exit_code == 2
    assert f"MLOPS_STATE_URL: folder {tmp_path}/nowhere/dir does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_an_env_file_that_is_not_text_is_one_line(monkeypatch, tmp_path):
    (tmp_path / ".env").write_bytes(b"MLOPS_LOG_LEVEL=\xff\xfe\n")
    result = _status(monkeypatch, tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["settings error: env file .env cannot be read (it is not UTF-8 text)"]


def test_one_plain_path_is_a_list_of_one(clean_env, monkeypatch):
    monkeypatch.setenv("MLOPS_PROJECT_PATHS", "models/x")
    assert load_settings().project_paths == ["models/x"]
    monkeypatch.setenv("MLOPS_PROJECT_PATHS", '["models/x", "shared/"]')
    assert load_settings().project_paths == ["models/x", "shared/"]


def test_an_empty_variable_is_an_unset_one(clean_env, monkeypatch):
    for name in ("MLOPS_SLACK_CHANNELS", "MLOPS_LOG_LEVEL", "MLOPS_WATCH_BRANCH", "MLOPS_STATE_URL"):
        monkeypatch.setenv(name, "")
    assert load_settings().model_dump() == Settings(_env_file=None).model_dump()


def test_cron_weekdays_count_from_sunday_as_cron_does():
    from bot.settings import _cron_weekdays

    assert _cron_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert _cron_weekdays("0,7") == _cron_weekdays("sun") == "sun"
    assert _cron_weekdays("5-7") == "sun,fri,sat"
    assert _cron_weekdays("*/2") == "sun,tue,thu,sat"
    assert _cron_weekdays("*") == "*"


# --- what does nothing is said, and the bot still starts ------------------------------------------


def test_unknown_mlops_variables_are_warned_about_with_the_nearest_name(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("MLOPS_MONITOR_INTERVAL=600\nOTHER_TOOL_SETTING=1\n")
    result = _status(monkeypatch, tmp_path, MLOPS_POLL_INTERVAL="abc", MLOPS_MODEL_PATH="/set/by/a/deploy/hook")
    assert result.exit_code == 0, result.output
    ignored = "is not a setting of mlops-bot and is ignored"
    assert result.stderr.splitlines() == [
        f"warning: MLOPS_MONITOR_INTERVAL {ignored}; did you mean MLOPS_MONITOR_INTERVAL_S?",
        f"warning: MLOPS_POLL_INTERVAL {ignored}; did you mean MLOPS_POLL_INTERVAL_S?",
    ]
    assert "no model in production yet" in result.stdout


def test_a_github_token_alone_is_ignored_with_one_warning(monkeypatch, tmp_path):
    token = "ghp_" + "x" * 36
    result = _status(monkeypatch, tmp_path, GITHUB_TOKEN=token)
    assert result.exit_code == 0, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("warning: GITHUB_TOKEN is set but GITHUB_REPOSITORY is not, so it is ignored")
    assert "set GITHUB_REPOSITORY=owner/name" in line and token not in result.output
    assert "no model in production yet" in result.stdout

    from click.testing import CliRunner

    from bot.cli import cli

    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert "! GITHUB_TOKEN is set but GITHUB_REPOSITORY is not" in doctor.stdout
    assert "fix: set GITHUB_REPOSITORY=owner/name" in doctor.stdout and doctor.stderr == ""
    assert token not in doctor.output


def test_the_repository_github_actions_sets_is_no_request_for_github(monkeypatch, tmp_path):
    result = _status(monkeypatch, tmp_path, GITHUB_ACTIONS="true", GITHUB_REPOSITORY="acme/churn")
    assert result.exit_code == 0, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("warning: GITHUB_REPOSITORY is set by GitHub Actions but no GITHUB_TOKEN is given")
    assert "no model in production yet" in result.stdout
    monkeypatch.delenv("GITHUB_ACTIONS")  # outside Actions the same setting is a mistake, said at once
    elsewhere = _status(monkeypatch, tmp_path)
    assert elsewhere.exit_code == 2
    assert "GITHUB_REPOSITORY is set but no credentials: set GITHUB_TOKEN" in elsewhere.stderr


def test_an_unexpected_failure_is_one_line_and_its_traceback_waits_for_debug(monkeypatch, tmp_path):
    import bot.app

    def broken(*_args, **_kwargs):
        raise RuntimeError("the adapter broke\non two lines")

    monkeypatch.setattr(bot.app, "build", broken)
    result = _status(monkeypatch, tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: the adapter broke on two lines (RuntimeError; MLOPS_LOG_LEVEL=DEBUG shows where)"]
    debug = _status(monkeypatch, tmp_path, MLOPS_LOG_LEVEL="DEBUG")
    assert isinstance(debug.exception, RuntimeError)


def test_the_default_data_folder_is_found_from_inside_a_project(tmp_path):
    from bot.settings import find_data_dir

    repo, project = tmp_path / "repo", tmp_path / "repo" / "models" / "churn"
    project.mkdir(parents=True)
    (repo / ".git").mkdir()
    assert find_data_dir(project) == repo / ".mlops"  # the repository's root, seen from any folder in it
    (project / ".mlops").mkdir()
    assert find_data_dir(project / "data") == project / ".mlops"  # an existing .mlops nearer wins
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert find_data_dir(outside) == outside / ".mlops"  # no repository: the current folder
