"""The bot's settings: read once from the environment and an optional ``.env`` file, validated, frozen.

The bot's own settings share the ``MLOPS_`` prefix; settings of outside services use the names
their ecosystems already use (``GITHUB_TOKEN``, ``SLACK_BOT_TOKEN``, ...). Nothing else in the code
reads ``os.environ``: the entry point builds one ``Settings`` and passes it down.

Every problem is one ``SettingsError`` line naming the variable, what was expected and an example
(``load_settings``); what does nothing but looks meant for the bot is a ``SettingsNote``
(``settings_notes``): an unknown ``MLOPS_`` name, a GITHUB_TOKEN without GITHUB_REPOSITORY.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

__all__ = ["BUNDLED_EXAMPLE", "Settings", "SettingsError", "SettingsNote", "cron_trigger", "env_name", "find_data_dir",
           "load_settings", "path_problem", "settings_notes"]

ENV_PREFIX = "MLOPS_"
# Settings given as JSON text (lists and mappings); MLOPS_PROJECT_PATHS also takes one plain path.
_JSON_SETTINGS = ("project_paths", "command_permissions", "ticket_patterns", "slack_channels",
                  "slack_project_channels", "slack_permissions", "azure_permissions", "github_project_statuses")
# MLOPS_ names the bot sets itself for the project's deploy command (pipeline/deploy.py): a deploy
# command that calls mlops-bot must not be told they are misspelt settings.
_HOOK_VARIABLES = frozenset({"MLOPS_MODEL_NAME", "MLOPS_MODEL_VERSION", "MLOPS_MODEL_DIR", "MLOPS_MODEL_PATH"})
# The example ships in the source tree; the default project is used when nothing else is set.
BUNDLED_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "breast_cancer"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable, what is expected and an example."""


def find_data_dir(start: Path) -> Path:
    """The default data folder: the nearest ``.mlops`` at or above ``start``, else one at the git
    repository's root, else ``start/.mlops``. So commands run from inside a model project's folder
    see the same registry and state as those run from the repository's root."""
    for folder in (start, *start.parents):
        if (folder / ".mlops").is_dir():
            return folder / ".mlops"
        if (folder / ".git").exists():
            return folder / ".mlops"
    return start / ".mlops"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # the .env file may hold other tools' settings too
        # JSON settings are decoded by _json_text below, so a malformed one is a validation error that
        # names its variable (pydantic-settings' own decoding stops at the first with a bare exception).
        enable_decoding=False,
        env_ignore_empty=True,  # MLOPS_X= (as compose's ${MLOPS_X:-} passes it) means unset, not ""
        frozen=True,
        validate_default=True,
        populate_by_name=True,  # tests and code build Settings(github_webhook_secret=...) by field name
    )

    data_dir: Path = Field(
        default_factory=lambda: find_data_dir(Path.cwd()),
        description="Folder for the bot's state: model registry, state database, reports. Default: `.mlops` in "
                    "the nearest folder above holding one, else at the git repository's root, else here.",
        examples=["/var/lib/mlops-bot"],
    )
    project_dir: Path = Field(
        default=BUNDLED_EXAMPLE,
        description="The model project folder (holding mlops.toml) the bot trains and watches; unset, every model "
                    "project of the repository the bot starts in (else the bundled example).",
        examples=["./models/churn"],
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="How much the bot logs.", examples=["DEBUG"]
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as readable text, or as JSON objects for log systems.",
        examples=["json"]
    )
    log_file: Path | None = Field(
        default=None,
        description="Write log lines to this file (appended) instead of stderr; `mlops-bot console` uses "
                    "MLOPS_DATA_DIR/logs/console.log when unset, so logs never interleave with the conversation.",
        examples=["/var/log/mlops-bot.log"],
    )
    state_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the state database; default: SQLite in MLOPS_DATA_DIR/state.db.",
        examples=["sqlite:////var/lib/mlops-bot/state.db"],
    )
    bot_name: str = Field(default="mlops-bot", description="The bot's user name; its own comments are ignored.",
                          examples=["mlops-bot[bot]"])

    # Local source control (the embedded default).
    repo_dir: Path | None = Field(
        default=None,
        description="Local git repository watched for merged changes; default: the one holding the project.",
        examples=["."],
    )
    watch_branch: str | None = Field(
        default=None, description="Branch whose new commits count as merged changes; default: the current one.",
        examples=["main"],
    )
    project_paths: list[str] = Field(
        default=[],
        description="Paths (in the repository) whose change triggers a pipeline run: one path as it is, several "
                    "as a JSON list; default: the project folder. With MLOPS_PROJECT_DIR unset: where to look for "
                    "model projects (folders or patterns like models/*).",
        examples=['["models/churn/", "shared/features/"]'],
    )
    project_path: str | None = Field(
        default=None,
        description="The project folder's path inside the repository, for runs from a fetched commit (GitHub); "
                    "default: MLOPS_PROJECT_DIR relative to its git repository.",
        examples=["models/churn"],
    )

    # Scheduler.
    poll_interval_s: float = Field(default=60.0, gt=0, description="Seconds between polls of source control.",
                                   examples=[30])
    monitor_interval_s: float = Field(default=300.0, gt=0, description="Seconds between drift checks.",
                                      examples=[600])
    deliver_interval_s: float = Field(default=5.0, gt=0, description="Seconds between outbox deliveries.",
                                      examples=[2])
    digest_cron: str = Field(
        default="0 9 * * *",
        description="When to post the daily digest (cron, local time; weekdays as cron counts them, 0 and 7 "
                    "Sunday); never merely because the bot started.",
        examples=["30 8 * * 1-5"])
    takeover_s: float = Field(
        default=30.0, ge=1, le=3600,
        description="Seconds within which a standby bot takes over when the leading one dies (bots sharing a PostgreSQL state database).",
        examples=[10],
    )
    work_sharing: Literal["lanes", "leader"] = Field(
        default="lanes",
        description="How bots sharing a PostgreSQL state database share the work: `lanes` (every bot works: each "
                    "claims lanes of the outbox and intervals of the scheduled jobs; a dead bot's lanes pass on "
                    "within MLOPS_TAKEOVER_S) or `leader` (one works, the others stand by to take over). Every bot "
                    "on one database needs the same. On SQLite one bot works alone either way.",
        examples=["leader"],
    )

    # Monitoring and retrain tickets.
    monitor_dir: Path | None = Field(
        default=None, description="Folder of production batch files (CSV/Parquet) to check; default: MLOPS_DATA_DIR/batches.",
        examples=["/data/production-batches"],
    )
    labels_dir: Path | None = Field(
        default=None,
        description="Folder of label files (CSV/Parquet: the project's id column and target) joined to earlier batches; default: MLOPS_DATA_DIR/labels.",
        examples=["/data/production-labels"],
    )
    drift_min_severity: Literal["low", "medium", "high"] = Field(
        default="low", description="The least severe drift that opens or updates a retrain ticket.", examples=["medium"]
    )
    drift_cooldown_s: float = Field(
        default=6 * 3600.0, ge=0,
        description="Seconds after a drift alert during which chat gets no new alert for the same model unless drift grows; findings still update the ticket and show as held in status.",
        examples=[3600],
    )

    # Commands.
    max_commands_per_comment: int = Field(default=3, ge=1, le=20,
                                          description="Commands run from one comment at most.", examples=[5])
    command_permissions: dict[str, str] = Field(
        default={}, description="Minimum permission per command, overriding the defaults (JSON).",
        examples=['{"deploy": "admin", "status": "triage"}'],
    )
    ticket_patterns: list[str] = Field(
        default=[r"(?i)(?<![A-Za-z0-9])(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?)?\s*#(\d+)", r"AB#(\d+)"],
        description="Regular expressions (one group: the number) that find the tickets a change links.",
        examples=['["#(\\d+)"]'],
    )

    # Serving webhooks (`mlops-bot serve`).
    host: str = Field(default="127.0.0.1", description="Address `mlops-bot serve` listens on.", examples=["0.0.0.0"])
    port: int = Field(default=8080, ge=1, le=65535, description="Port `mlops-bot serve` listens on.", examples=[9000])
    webhook_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024,
                                   description="Largest webhook body accepted, in bytes (larger ones get 413).",
                                   examples=[26214400])
    github_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_WEBHOOK_SECRET",
        description="Secret of the GitHub webhook; deliveries are refused while it is unset.",
        examples=["a-long-random-string"],
    )

    # MLflow (the model registry and run tracking: embedded by default, a server when MLFLOW_TRACKING_URI
    # is set). MLflow's own variables, read by MLflow too; the bot reads them to choose the registry and
    # hide the secrets.
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking server (http(s)://..., databricks, azureml://...) or a local store "
                    "(sqlite:///path/mlflow.db): models are registered and runs tracked there; unset, the embedded "
                    "MLflow store, a SQLite file MLOPS_DATA_DIR/mlflow/mlflow.db with the artifacts beside it (no "
                    "server).",
        examples=["http://mlflow.internal:5000"],
    )
    mlflow_registry_uri: str | None = Field(
        default=None, validation_alias="MLFLOW_REGISTRY_URI",
        description="MLflow model registry when it is not the tracking server (default: MLFLOW_TRACKING_URI).",
        examples=["databricks-uc"],
    )
    mlflow_tracking_token: SecretStr | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_TOKEN",
        description="Bearer token for the MLflow server (MLflow reads it; the bot keeps it out of logs and of the "
                    "pipeline's process).",
        examples=["dapi..."],
    )
    mlflow_tracking_username: str | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_USERNAME",
        description="User name for the MLflow server's basic authentication (MLflow reads it).",
        examples=["mlops-bot"],
    )
    mlflow_tracking_password: SecretStr | None = Field(
        default=None, validation_alias="MLFLOW_TRACKING_PASSWORD",
        description="Password for the MLflow server's basic authentication, with MLFLOW_TRACKING_USERNAME "
                    "(MLflow reads both).",
        examples=["a-long-random-string"],
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="MLFLOW_WEBHOOK_SECRET",
        description="Secret of the MLflow registry webhook (POST /webhooks/mlflow); deliveries are refused while it "
                    "is unset. Alias moves are also seen by polling, so webhooks only make the bot see them sooner.",
        examples=["a-long-random-string"],
    )
    production_alias: str = Field(
        default="production", pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="The MLflow alias that marks the production version (teams often use champion).",
        examples=["champion"],
    )
    candidate_alias: str = Field(
        default="candidate", pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="The MLflow alias a validated version waiting for /deploy gets.", examples=["challenger"],
    )

    # GitHub (source control and tracker when a token or an App is configured).
    github_token: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_TOKEN",
        description="GitHub token (fine-grained: issues, pull requests, commit statuses read/write; metadata read); "
                    "used with GITHUB_REPOSITORY, ignored (with a warning) without it.",
        examples=["github_pat_..."],
    )
    github_repository: str | None = Field(
        default=None, validation_alias="GITHUB_REPOSITORY", pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="The repository the bot watches, as owner/name.", examples=["acme/churn-model"],
    )
    github_api_url: str = Field(
        default="https://api.github.com", validation_alias="GITHUB_API_URL",
        description="GitHub's REST API (GitHub Enterprise: https://HOST/api/v3).", examples=["https://github.example.com/api/v3"],
    )
    github_app_id: str | None = Field(default=None, validation_alias="GITHUB_APP_ID",
                                      description="GitHub App id, to act as an App instead of with a token.",
                                      examples=["123456"])
    github_app_private_key: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_APP_PRIVATE_KEY",
        description="The App's private key (PEM text, newlines as \\n).", examples=["-----BEGIN RSA PRIVATE KEY-----\\n..."],
    )
    github_app_installation_id: int | None = Field(
        default=None, validation_alias="GITHUB_APP_INSTALLATION_ID",
        description="The App's installation id on the repository's account.", examples=[7654321],
    )
    github_rate_limit_reserve: int = Field(
        default=100, ge=0, description="GitHub requests kept in reserve: below it the bot waits for the reset.",
        examples=[500],
    )
    github_cycle_budget: int = Field(
        default=1000, ge=0, description="GitHub requests per poll cycle at most (0: no limit); the rest of the "
                                        "work waits for the next cycle.",
        examples=[200],
    )

    github_workflow: str | None = Field(
        default=None, description="GitHub Actions workflow (file name or id) that trains, instead of the "
                                  "in-process pipeline; it must set run-name: ${{ inputs.run_id }}.",
        examples=["train.yml"])
    github_timeout_s: float = Field(default=15.0, ge=1, description="Seconds to wait for one GitHub request.",
                                    examples=[30])
    github_project: str | None = Field(
        default=None, description="GitHub Project (the current Projects) whose Status field follows each retrain "
                                  "ticket: its URL, or OWNER/NUMBER; the token needs the 'project' scope (an App: "
                                  "the organization permission Projects, read and write).",
        examples=["https://github.com/orgs/acme/projects/3"])
    github_project_statuses: dict[str, str] = Field(
        default_factory=lambda: {"opened": "Todo", "retraining": "In progress", "review": "In review",
                                 "resolved": "Done"},
        description="The project's Status option for each stage of a retrain episode (JSON: opened, retraining, "
                    "review, resolved; names in any case; stages left out keep their default).",
        examples=['{"review": "Review", "resolved": "Shipped"}'])

    # Slack (chat, when a bot token is configured).
    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias="SLACK_BOT_TOKEN",
        description="Slack bot token (xoxb-...): chat goes to Slack instead of the console.", examples=["xoxb-..."],
    )
    slack_api_url: str = Field(default="https://slack.com/api/", description="Slack's Web API base URL.",
                               examples=["https://slack.com/api/"])
    slack_channels: dict[str, str] = Field(
        default={}, description="Slack channel for each kind of message (JSON: mlops-pipeline, mlops-alerts, "
                                "mlops-digest); unmapped kinds use their own name.",
        examples=['{"mlops-alerts": "#ml-alerts", "mlops-pipeline": "#ml-ci", "mlops-digest": "#ml"}'],
    )
    slack_mention_group: str | None = Field(
        default=None, description="Who severe drift alerts mention: a user group id (S...), here or channel.",
        examples=["S0123ABCD"],
    )
    slack_project_channels: dict[str, dict[str, str]] = Field(
        default={}, description="Slack channels per model project (JSON: project name to a mapping like "
                                "MLOPS_SLACK_CHANNELS), over MLOPS_SLACK_CHANNELS for that project.",
        examples=['{"churn": {"mlops-alerts": "#churn-alerts", "mlops-pipeline": "#churn-ci"}}'],
    )

    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET",
        description="Slack app's signing secret; /mlops slash commands and buttons are refused while it is unset.",
        examples=["8f742231b10e8888abcd99yyyzzz85a5"],
    )
    slack_permissions: dict[str, str] = Field(
        default={}, description="Permission level of Slack users for /mlops and buttons (JSON: user id or name, "
                                "user group id S... or @handle, or * for everyone, to "
                                "read|triage|write|maintain|admin; the highest that names a user wins); default read.",
        examples=['{"U024BE7LH": "maintain", "@ml-leads": "admin", "*": "read"}'],
    )

    # Azure DevOps: Boards for tickets; optionally Repos for code and Pipelines for runs.
    azure_devops_org_url: str | None = Field(
        default=None, validation_alias="AZURE_DEVOPS_ORG_URL", pattern=r"^https?://",
        description="Azure DevOps organisation URL; with the PAT and project, retrain tickets go to Azure Boards.",
        examples=["https://dev.azure.com/acme"],
    )
    azure_devops_pat: SecretStr | None = Field(
        default=None, validation_alias="AZURE_DEVOPS_EXT_PAT",
        description="Personal access token (Work Items read & write; Code read & write, and status; Build read & execute).",
        examples=["(52 characters)"],
    )
    azure_devops_project: str | None = Field(default=None, validation_alias="AZURE_DEVOPS_PROJECT",
                                             description="The Azure DevOps project.", examples=["ml-platform"])
    azure_work_item_type: str = Field(default="Task", description="Work item type of retrain tickets.",
                                      examples=["Issue"])
    azure_process: Literal["Basic", "Agile", "Scrum", "CMMI"] = Field(
        default="Agile", description="The project's process, for the state a closed ticket moves to.",
        examples=["Scrum"])
    azure_area_path: str | None = Field(default=None, description="Area path of retrain tickets.",
                                        examples=["ml-platform\\Models"])
    azure_team: str | None = Field(default=None, description="Team whose current iteration gets the tickets.",
                                   examples=["ML Team"])
    azure_repository: str | None = Field(
        default=None, description="Azure Repos repository to watch instead of GitHub or the local one.",
        examples=["churn-model"])
    azure_pipeline_id: int | None = Field(
        default=None, description="Azure Pipelines pipeline that trains (instead of the in-process pipeline).",
        examples=[12])
    azure_permissions: dict[str, str] = Field(
        default={}, description="Permission level of Azure Repos users for commands (JSON; default read).",
        examples=['{"alice@example.com": "maintain"}'])
    azure_devops_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="AZURE_DEVOPS_WEBHOOK_SECRET",
        description="Password of the service hooks' basic authentication; hooks are refused while it is unset.",
        examples=["a-long-random-string"])

    @field_validator("production_alias", "candidate_alias")
    @classmethod
    def _alias_not_mlflows_own(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise ValueError("this name (and v<number>) is one MLflow keeps for itself")
        return alias

    @model_validator(mode="after")
    def _aliases_differ(self) -> Settings:
        if self.production_alias == self.candidate_alias:
            raise ValueError("MLOPS_CANDIDATE_ALIAS: the same as MLOPS_PRODUCTION_ALIAS; give them different names, "
                             "e.g. MLOPS_CANDIDATE_ALIAS=challenger")
        return self

    @model_validator(mode="after")
    def _azure_complete(self) -> Settings:
        parts = {"AZURE_DEVOPS_ORG_URL": self.azure_devops_org_url, "AZURE_DEVOPS_EXT_PAT": self.azure_devops_pat,
                 "AZURE_DEVOPS_PROJECT": self.azure_devops_project}
        if any(parts.values()) and not all(parts.values()):
            missing = ", ".join(name for name, value in parts.items() if not value)
            raise ValueError(f"Azure DevOps needs AZURE_DEVOPS_ORG_URL, AZURE_DEVOPS_EXT_PAT and AZURE_DEVOPS_PROJECT "
                             f"together; missing: {missing}")
        return self

    @property
    def azure_enabled(self) -> bool:
        return bool(self.azure_devops_org_url)

    @model_validator(mode="after")
    def _github_complete(self) -> Settings:
        app = [self.github_app_id, self.github_app_private_key, self.github_app_installation_id]
        if any(app) and not all(app):
            raise ValueError("GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and GITHUB_APP_INSTALLATION_ID go together; "
                             "set all three, or use GITHUB_TOKEN")
        # A GITHUB_TOKEN alone is not asking for GitHub: gh users and CI jobs export one for other
        # tools. It is ignored (settings_notes says so); App settings exist only for this bot.
        if all(app) and not self.github_repository:
            raise ValueError("GitHub App settings are set but GITHUB_REPOSITORY is not; e.g. GITHUB_REPOSITORY=acme/churn-model")
        # GitHub Actions sets GITHUB_REPOSITORY in every job: there it is not asking for GitHub either
        # (settings_notes says so); anywhere else, a repository without credentials is a mistake.
        if self.github_repository and not self._github_credentials and not _in_github_actions():
            raise ValueError("GITHUB_REPOSITORY is set but no credentials: set GITHUB_TOKEN (or the GitHub App settings)")
        return self

    @model_validator(mode="after")
    def _project_needs_github(self) -> Settings:
        if self.github_project and not self.github_enabled:
            raise ValueError("MLOPS_GITHUB_PROJECT is set but GitHub is not: its cards are the retrain tickets' "
                             "issues, so set GITHUB_REPOSITORY and GITHUB_TOKEN (or the GitHub App settings) too")
        return self

    @property
    def _github_credentials(self) -> bool:
        return bool(self.github_token or self.github_app_id)  # the App's three settings come together

    @property
    def github_enabled(self) -> bool:
        return bool(self.github_repository) and self._github_credentials

    @field_validator(*_JSON_SETTINGS, mode="before")
    @classmethod
    def _json_text(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON text from the environment or .env, decoded; values given in code pass as they are."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:  # an empty variable is an unset one
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        if info.field_name == "project_paths" and not text.startswith(("[", "{", '"')):
            return [text]  # one plain path: no JSON needed for the common case
        expected = "a JSON list" if isinstance(cls.model_fields[info.field_name].default, list) else "a JSON object"
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # exc.msg and the position only: the text itself is never repeated (it may hold a secret).
            raise ValueError(f"expected {expected}, but this is not valid JSON ({exc.msg} at character "
                             f"{exc.pos + 1})") from None

    @field_validator("watch_branch")
    @classmethod
    def _branch_name(cls, value: str | None) -> str | None:
        # git check-ref-format's rules, so that a typo fails here and not at the first poll.
        if value and (re.search(r"[\s~^:?*\[\\]|\.\.|@\{|//|^[-/.]|[/.]$|\.lock$", value)):
            raise ValueError("expected a git branch name (no spaces, none of ~^:?*[\\, no '..')")
        return value

    @field_validator("project_path")
    @classmethod
    def _path_inside_the_repository(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value)
                                  or ".." in Path(value).parts):
            raise ValueError("expected a relative path inside the repository (not absolute, no '..')")
        return value

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", value):
            raise ValueError("expected an IP address or a host name")
        return value

    @field_validator("github_api_url", "slack_api_url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        if not re.match(r"https?://[^\s/]+", value) or re.search(r"\s", value):
            raise ValueError("expected an http:// or https:// address")
        return value

    @field_validator("github_app_id")
    @classmethod
    def _app_id(cls, value: str | None) -> str | None:
        if value and not value.isdigit():
            raise ValueError("expected the App's number (its settings page shows 'App ID')")
        return value

    @field_validator("github_app_private_key")
    @classmethod
    def _pem_key(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else None
        if text and not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            raise ValueError("expected the PEM text of the App's private key, starting -----BEGIN ... PRIVATE KEY-----")
        return value

    @field_validator("github_project")
    @classmethod
    def _project_reference(cls, value: str | None) -> str | None:
        from integrations.github_project_refs import parse_project_ref

        if value is not None:
            parse_project_ref(value)  # its ValueError says what is expected
        return value

    @field_validator("github_project_statuses")
    @classmethod
    def _status_per_stage(cls, value: dict[str, str]) -> dict[str, str]:
        from integrations.board_stages import DEFAULT_STATUSES, STAGES

        for stage, option in value.items():
            if stage not in STAGES:
                raise ValueError(f"{stage!r} is not a stage; use {', '.join(STAGES)}")
            if not isinstance(option, str) or not option.strip():
                raise ValueError(f"{stage}: expected the name of one of the Status field's options")
        return {**DEFAULT_STATUSES, **{stage: option.strip() for stage, option in value.items()}}

    @field_validator("github_workflow")
    @classmethod
    def _workflow(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"\d+|[\w.-]+\.ya?ml", value):
            raise ValueError("expected a workflow file name in .github/workflows (ending .yml or .yaml) or its id")
        return value

    @field_validator("slack_mention_group")
    @classmethod
    def _mention(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"<[^>\s]+>|[@!]?[\w.-]+", value.strip()):
            raise ValueError("expected a user group id (S...), @handle, here or channel")
        return value

    @field_validator("azure_devops_project")
    @classmethod
    def _azure_project_name(cls, value: str | None) -> str | None:
        # Azure DevOps' own naming rules for projects.
        if value and (not value.strip() or len(value) > 64 or value.startswith(("_", "."))
                                  or value.endswith(".") or re.search(r'[\\/:*?"<>|;#$*{},+=\[\]]', value)):
            raise ValueError("expected an Azure DevOps project name (at most 64 characters, none of "
                             "\\ / : * ? \" < > | ; # $ { } , + = [ ])")
        return value

    @field_validator("state_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        """A URL SQLAlchemy can open, with its driver installed: checked now, not at first use."""
        if value is None or not value.strip():
            return None
        import sqlalchemy as sa

        # No message repeats the URL: it may carry the database password.
        try:
            url = sa.make_url(value)
        except sa.exc.ArgumentError:
            raise ValueError("expected a database URL such as sqlite:///PATH or "
                             "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE") from None
        try:
            dialect = url.get_dialect()
        except sa.exc.NoSuchModuleError:
            raise ValueError(f"unknown database kind {url.drivername!r} (the part before ://); use sqlite or "
                             "postgresql+psycopg") from None
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            raise ValueError(f"the driver for {url.drivername} ({exc.name or dialect.driver}) is not installed; "
                             "install it, or use sqlite or postgresql+psycopg") from None
        return value

    @field_validator("command_permissions")
    @classmethod
    def _known_commands_and_levels(cls, value: dict[str, str]) -> dict[str, str]:
        from bot.commands import check_overrides

        check_overrides(value)
        return value

    @field_validator("slack_permissions", "azure_permissions")
    @classmethod
    def _known_levels(cls, value: dict[str, str]) -> dict[str, str]:
        levels = ("none", "read", "triage", "write", "maintain", "admin")
        for who, level in value.items():
            if level not in levels:
                raise ValueError(f"{who}: {level!r} is not a level; use one of {', '.join(levels)}")
        return value

    @field_validator("slack_project_channels")
    @classmethod
    def _known_kinds_per_project(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        kinds = ("mlops-pipeline", "mlops-alerts", "mlops-digest")
        for project, channels in value.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]+", project):
                raise ValueError(f"{project!r} is not a project name (the [project] name of its mlops.toml)")
            for kind, channel in channels.items():
                if kind not in kinds:
                    raise ValueError(f"{project}: {kind!r} is not a kind of message; use {', '.join(kinds)}")
                if not channel.strip().lstrip("#"):
                    raise ValueError(f"{project}: {kind} needs a channel name or id")
        return value

    @field_validator("digest_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            cron_trigger(value)
        except ValueError as exc:
            raise ValueError(f"expected five cron fields (minute hour day month weekday): {exc}") from None
        return value

    @field_validator("ticket_patterns")
    @classmethod
    def _patterns_with_a_group(cls, value: list[str]) -> list[str]:
        for number, pattern in enumerate(value, 1):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {number} is not a regular expression: {exc.msg} at position {exc.pos} "
                                 "(in JSON, write each backslash twice)") from None
            if compiled.groups != 1:
                raise ValueError(f"pattern {pattern!r} must have exactly one group (the ticket number)")
        return value

    @property
    def registry_dir(self) -> Path:
        return self.data_dir.expanduser().resolve() / "registry"

    @property
    def state_database_url(self) -> str:
        return self.state_url or f"sqlite:///{self.data_dir.expanduser().resolve() / 'state.db'}"

    @property
    def batches_dir(self) -> Path:
        return (self.monitor_dir or self.data_dir / "batches").expanduser().resolve()

    @property
    def label_files_dir(self) -> Path:
        return (self.labels_dir or self.data_dir / "labels").expanduser().resolve()


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Build the settings and check the folders and files they name, as one line naming each bad variable.

    Every problem becomes a SettingsError: a value of the wrong kind, a rule across settings, and a
    folder that does not exist or is a file. Nothing is created here.
    """
    if env_file is not None and env_file != ".env" and not Path(env_file).is_file():
        raise SettingsError(f"env file {env_file} not found; pass an existing file to --env-file")
    try:
        settings = Settings(_env_file=env_file)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:  # the env file itself: unreadable, or not UTF-8 text
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise SettingsError(f"env file {env_file} cannot be read ({reason})") from None
    except _SourceError as exc:  # a source could not read a value at all; its cause may quote the value
        found = re.search(r'field "([^"]+)"', str(exc))
        if found and found[1] in Settings.model_fields:
            raise SettingsError(_with_example(found[1], "cannot be read in this form")) from None
        raise SettingsError("a setting cannot be read; compare the environment and .env with .env.example") from None
    problems = _path_problems(settings)
    if problems:
        raise SettingsError("; ".join(problems))
    return settings


# Folders the settings name: (field, what it is for, whether it must exist already).
_FOLDERS = (("data_dir", "the bot's data folder", False), ("project_dir", "the model project folder", True),
            ("repo_dir", "the git repository", True), ("monitor_dir", "the folder of production batches", False),
            ("labels_dir", "the folder of label files", False))


def _path_problems(settings: Settings) -> list[str]:
    """Folders that are files, or that must exist and do not; the SQLite file's folder must exist."""
    problems = []
    for field, what, must_exist in _FOLDERS:
        # The default project is the bundled example: only a project named by the user is checked.
        if field not in settings.model_fields_set or getattr(settings, field) is None:
            continue
        path = getattr(settings, field).expanduser()
        if path.exists() and not path.is_dir():
            problems.append(_with_example(field, f"{path} is a file; expected {what}"))
        elif must_exist and not path.exists():
            problems.append(_with_example(field, f"folder {path} does not exist; expected {what}"))
        elif not path.exists():
            parent = next((p for p in path.absolute().parents if p.exists()), None)
            if parent is not None and not parent.is_dir():
                problems.append(_with_example(field, f"{parent} is a file, so {path} cannot be created"))
            elif parent is not None and not os.access(parent, os.W_OK | os.X_OK):
                problems.append(_with_example(field, f"{path} cannot be created: {parent} is not writable"))
    if settings.log_file is not None:
        log_file = settings.log_file.expanduser()
        nearest = next((p for p in log_file.absolute().parents if p.exists()), None)
        if log_file.is_dir():
            problems.append(_with_example("log_file", f"{log_file} is a folder; name the log file in it"))
        elif nearest is not None and not nearest.is_dir():
            problems.append(_with_example("log_file", f"{log_file} cannot be created: {nearest} is a file"))
    if settings.state_url:
        import sqlalchemy as sa

        url = sa.make_url(settings.state_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
                and not url.database.startswith("file:"):
            database = Path(url.database).expanduser()
            if not database.parent.is_dir():
                problems.append(_with_example("state_url", f"folder {database.parent} does not exist; create it, "
                                                           "or name a database file in an existing folder"))
            elif database.is_dir():
                problems.append(_with_example("state_url", f"{database} is a folder; name the database file in it"))
    return problems


def _with_example(field: str, problem: str) -> str:
    examples = Settings.model_fields[field].examples
    variable = env_name(field)
    return f"{variable}: {problem}" + (f"; e.g. {variable}={examples[0]}" if examples else "")


def path_problem(settings: Settings, error: OSError) -> str | None:
    """The one line for a folder or file of the settings that cannot be used (found at first use), or None
    when ``error`` concerns none of them."""
    if not error.filename:
        return None
    failed = Path(error.filename).expanduser().absolute()
    candidates = [(field, getattr(settings, field)) for field, _what, _must in _FOLDERS]
    candidates.append(("data_dir", settings.data_dir))  # the default data folder too
    for field, folder in candidates:
        if folder is None:
            continue
        folder = folder.expanduser().absolute()
        if failed == folder or folder in failed.parents:
            reason = error.strerror or type(error).__name__
            return _with_example(field, f"cannot use {failed} ({reason}); expected a folder the bot can write")
    return None


class SettingsNote(NamedTuple):
    """Something in the settings worth a word at start-up that does not stop the bot."""

    variable: str
    problem: str
    fix: str

    @property
    def line(self) -> str:
        return f"{self.variable} {self.problem}; {self.fix}"


def _in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def settings_notes(env_file: str | Path | None = ".env") -> list[SettingsNote]:
    """Variables in the environment or ``env_file`` that look meant for the bot but do nothing.

    Read from the raw variables, before validation, so they are said even when a value is wrong:
    an ``MLOPS_`` name that is no setting (with the nearest known one), and a GITHUB_TOKEN that is
    ignored because GITHUB_REPOSITORY is not set.
    """
    import difflib

    raw: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        try:
            raw.update({name.upper(): value or "" for name, value in dotenv_values(env_file, encoding="utf-8").items()})
        except (OSError, UnicodeDecodeError):
            pass  # load_settings says what is wrong with the file
    raw.update({name.upper(): value for name, value in os.environ.items()})  # the environment wins, as in Settings
    known = {env_name(field) for field in Settings.model_fields}
    ours = sorted(name for name in known if name.startswith(ENV_PREFIX))
    notes = []
    for name in sorted(raw):
        if name.startswith(ENV_PREFIX) and name not in known and name not in _HOOK_VARIABLES:
            nearest = difflib.get_close_matches(name, ours, n=1, cutoff=0.6)
            fix = f"did you mean {nearest[0]}?" if nearest else "see .env.example for the settings there are"
            notes.append(SettingsNote(name, "is not a setting of mlops-bot and is ignored", fix))
    app = all(raw.get(name) for name in ("GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_INSTALLATION_ID"))
    if raw.get("GITHUB_TOKEN") and not raw.get("GITHUB_REPOSITORY") and not app:
        notes.append(SettingsNote(
            "GITHUB_TOKEN", "is set but GITHUB_REPOSITORY is not, so it is ignored and source control and tickets "
                            "stay local (git repository and board)",
            "set GITHUB_REPOSITORY=owner/name to watch that repository and file tickets on GitHub "
            "(GITHUB_API_URL for GitHub Enterprise)"))
    if raw.get("GITHUB_REPOSITORY") and not raw.get("GITHUB_TOKEN") and not app and _in_github_actions():
        notes.append(SettingsNote(
            "GITHUB_REPOSITORY", "is set by GitHub Actions but no GITHUB_TOKEN is given, so source control and "
                                 "tickets stay local",
            "to use this repository, pass the token in the step: env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}"))
    return notes


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbering: 0 (and 7) is Sunday


def cron_trigger(expression: str, timezone: Any = None):
    """An APScheduler CronTrigger for a crontab line (minute hour day month weekday), read as cron reads it.

    APScheduler 3's own ``from_crontab`` counts weekdays from Monday, so ``1-5`` would mean Tuesday to
    Saturday; here the weekdays become names first. ``timezone`` None: the system's local zone.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"got {len(fields)} field(s)")
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_weekdays(weekday),
                       timezone=timezone)


def _cron_weekdays(field: str) -> str:
    """Cron's weekday field (``1-5``, ``0,6``, ``*/2``, ``mon-fri``, 7 for Sunday) as APScheduler's day names."""
    if field in ("*", "?"):
        return "*"

    def day(token: str) -> int:
        token = token.strip().lower()[:3]
        if token in _WEEKDAYS:
            return _WEEKDAYS.index(token)
        if token.isdigit() and int(token) <= 7:
            return int(token)
        raise ValueError(f"weekday {token!r} is not 0-7 or sun-sat")

    days: set[int] = set()
    for item in field.split(","):
        part, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"weekday step {step_text!r} is not a positive number")
        step = int(step_text) if slash else 1
        if part == "*":
            first, last = 0, 6
        elif "-" in part:
            first, last = (day(token) for token in part.split("-", 1))
        else:
            first = day(part)
            last = 6 if slash else first  # cron: "2/3" runs from Tuesday to the end of the week
        if last < first:
            raise ValueError(f"weekday range {part!r} runs backwards")
        days.update(number % 7 for number in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[number] for number in sorted(days))


def env_name(field_name: str) -> str:
    """The environment variable that sets a field: its ecosystem name, or the bot's prefix and name."""
    field = Settings.model_fields.get(field_name)
    if field is not None and isinstance(field.validation_alias, str):
        return field.validation_alias
    return (ENV_PREFIX + field_name).upper()


def describe_errors(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names the variables
            problems.append(message)
            continue
        located = str(error["loc"][0])
        name = located if located in Settings.model_fields else next(
            (n for n, f in Settings.model_fields.items() if f.validation_alias == located), located)
        field = Settings.model_fields.get(name)
        variable = env_name(name) if field else located.upper()
        example = f"; e.g. {variable}={field.examples[0]}" if field and field.examples else ""
        # Never echo the value: it may be a secret.
        problems.append(f"{variable}: {message}{example}")
    return " ".join("; ".join(problems).split())  # one line, whatever a message holds
