"""The bot's settings: read once from the environment and an optional ``.env`` file, validated, frozen.

The bot's own settings share the ``MLOPS_`` prefix; settings of outside services use the names
their ecosystems already use (``GITHUB_TOKEN``, ``SLACK_BOT_TOKEN``, ...). Nothing else in the code
reads ``os.environ``: the entry point builds one ``Settings`` and passes it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BUNDLED_EXAMPLE", "Settings", "SettingsError", "env_name", "load_settings"]

ENV_PREFIX = "MLOPS_"
# The example ships in the source tree; the default project is used when nothing else is set.
BUNDLED_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "breast_cancer"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable, what is expected and an example."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # the .env file may hold other tools' settings too
        frozen=True,
        validate_default=True,
        populate_by_name=True,  # tests and code build Settings(github_webhook_secret=...) by field name
    )

    data_dir: Path = Field(
        default=Path(".mlops"),
        description="Folder for the bot's state: model registry, state database, reports.",
        examples=["/var/lib/mlops-bot"],
    )
    project_dir: Path = Field(
        default=BUNDLED_EXAMPLE,
        description="The model project folder (holding mlops.toml) the bot trains and watches.",
        examples=["./models/churn"],
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="How much the bot logs.", examples=["DEBUG"]
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as readable text, or as JSON objects for log systems.",
        examples=["json"]
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
        description="Paths (in the repository) whose change triggers a pipeline run; default: the project folder.",
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
    digest_cron: str = Field(default="0 9 * * *", description="When to post the daily digest (cron, local time).",
                             examples=["30 8 * * 1-5"])
    takeover_s: float = Field(
        default=30.0, ge=1, le=3600,
        description="Seconds within which a standby bot takes over when the leading one dies (bots sharing a PostgreSQL state database).",
        examples=[10],
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

    # GitHub (source control and tracker when a token or an App is configured).
    github_token: SecretStr | None = Field(
        default=None, validation_alias="GITHUB_TOKEN",
        description="GitHub token (fine-grained: issues, pull requests, commit statuses read/write; metadata read).",
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
        description="Personal access token (Work Items read & write; Code read & status; Build read & execute).",
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
        if (self.github_token or all(app)) and not self.github_repository:
            raise ValueError("GitHub credentials are set but GITHUB_REPOSITORY is not; e.g. GITHUB_REPOSITORY=acme/churn-model")
        if self.github_repository and not (self.github_token or all(app)):
            raise ValueError("GITHUB_REPOSITORY is set but no credentials: set GITHUB_TOKEN (or the GitHub App settings)")
        return self

    @property
    def github_enabled(self) -> bool:
        return bool(self.github_repository)

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
        import re

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
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value)
        return value

    @field_validator("ticket_patterns")
    @classmethod
    def _patterns_with_a_group(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            if re.compile(pattern).groups != 1:
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
    """Build the settings, turning validation errors into one line per bad variable."""
    if env_file is not None and env_file != ".env" and not Path(env_file).is_file():
        raise SettingsError(f"env file {env_file} not found; pass an existing file to --env-file")
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


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
    return "; ".join(problems)
