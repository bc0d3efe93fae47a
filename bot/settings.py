"""The bot's settings: read once from the environment and an optional ``.env`` file, validated, frozen.

The bot's own settings share the ``MLOPS_`` prefix; settings of outside services use the names
their ecosystems already use (``GITHUB_TOKEN``, ``SLACK_BOT_TOKEN``, ...). Nothing else in the code
reads ``os.environ``: the entry point builds one ``Settings`` and passes it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BUNDLED_EXAMPLE", "Settings", "SettingsError", "load_settings"]

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

    @property
    def registry_dir(self) -> Path:
        return self.data_dir.expanduser().resolve() / "registry"


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Build the settings, turning validation errors into one line per bad variable."""
    if env_file is not None and env_file != ".env" and not Path(env_file).is_file():
        raise SettingsError(f"env file {env_file} not found; pass an existing file to --env-file")
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field_name = str(error["loc"][0]) if error["loc"] else ""
        field = Settings.model_fields.get(field_name)
        variable = (ENV_PREFIX + field_name).upper()
        example = f"; e.g. {variable}={field.examples[0]}" if field and field.examples else ""
        # Never echo the value: it may be a secret.
        problems.append(f"{variable}: {error['msg']}{example}")
    return "; ".join(problems)
