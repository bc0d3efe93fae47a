"""The bot's log lines: readable text by default, JSON for log systems (``MLOPS_LOG_FORMAT=json``).

Each line carries the event, effect and run it belongs to when one is known: ``log_context`` sets
them (in ``contextvars``, so threads and the web server's worker threads each keep their own) around
event handling, effect delivery and pipeline runs, and a filter on the handler stamps them on every
record. Secrets never reach the output: the formatter replaces every configured secret (tokens,
signing secrets, the database password), and anything shaped like a well-known token, with ``***``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = ["configure_logging", "current_context", "log_context", "redact", "secrets_of"]

_FIELDS = ("event", "effect", "run")
_VARS = {name: contextvars.ContextVar(f"mlops_bot_{name}", default=None) for name in _FIELDS}
_MASK = "***"
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Quiet unless something is wrong: request-level chatter says nothing a user can act on.
_NOISY = ("apscheduler", "urllib3", "sqlalchemy", "msrest", "azure", "github.Requester", "slack_sdk",
          "alembic.runtime.plugins", "matplotlib", "PIL")
# Shapes of credentials worth hiding even when they are not this bot's own (defence in depth).
_TOKEN_SHAPES = [
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abeoprs]-[A-Za-z0-9-]{8,})"), _MASK),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s\"',}]+"), r"\1" + _MASK),
    (re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{20,}"), r"\1 " + _MASK),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1" + _MASK + "@"),  # user:password@ in URLs
]
_HANDLER_MARK = "_mlops_bot_handler"


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Within the block, log lines carry these ids (``event``, ``effect``, ``run``); None leaves one as it is."""
    unknown = set(ids) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    tokens = [(_VARS[name], _VARS[name].set(str(value))) for name, value in ids.items() if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str]:
    """The ids set by the enclosing ``log_context`` blocks."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold (tokens, keys, signing secrets, the database password)."""
    from pydantic import SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            found.append(text)
            if "\\n" in text or "\n" in text:  # a PEM key: each line of it too
                found.extend(line for line in text.replace("\\n", "\n").splitlines() if len(line) >= 16)
    if settings.state_url:
        try:
            import sqlalchemy as sa

            password = sa.make_url(settings.state_url).password
        except Exception:  # noqa: BLE001 - a malformed URL is reported elsewhere
            password = None
        if password:
            found.append(str(password))
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each secret (also as JSON would escape it) and each token-shaped string masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret and escaped in text:
            text = text.replace(escaped, _MASK)
    for pattern, replacement in _TOKEN_SHAPES:
        text = pattern.sub(replacement, text)
    return text


class _ContextFilter(logging.Filter):
    """Stamps the current event, effect and run on each record (as ``mlops_event`` ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, f"mlops_{name}", None) is None:
                setattr(record, f"mlops_{name}", var.get())
        return True


class _TextFormatter(logging.Formatter):
    """``12:00:00 INFO    mlops_bot.outbox: effect ... delivered [event=... effect=...]``, secrets masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(_TEXT_FORMAT, datefmt="%H:%M:%S")
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={value}" for name in _FIELDS if (value := getattr(record, f"mlops_{name}", None)))
        if ids:
            first, newline, rest = line.partition("\n")  # after the message, before any traceback
            line = f"{first} [{ids}]{newline}{rest}"
        return redact(line, self._secrets)


def _json_formatter(secrets: Iterable[str]) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    kept = tuple(secrets)

    class _Json(JsonFormatter):
        def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
            super().add_fields(log_data, record, message_dict)
            log_data.pop("color_message", None)  # uvicorn's copy of the message with terminal colours
            for name in _FIELDS:
                log_data.pop(f"mlops_{name}", None)
                value = getattr(record, f"mlops_{name}", None)
                if value is not None:
                    log_data[name] = value

        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record), kept)

    return _Json("%(asctime)s %(levelname)s %(name)s %(message)s",
                 rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                 datefmt="%Y-%m-%dT%H:%M:%S%z")


def configure_logging(settings: Settings, *, stream: TextIO | None = None, file: Path | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream``, else to ``file`` or MLOPS_LOG_FILE (appended), else
    to stderr, in the configured format; returns the handler.

    Calling it again replaces the handler it installed before (and leaves any other handler alone).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    log_file = file or settings.log_file
    if stream is None and log_file is not None:
        log_file = Path(log_file).expanduser()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    secrets = secrets_of(settings)
    handler.setFormatter(_json_formatter(secrets) if settings.log_format == "json" else _TextFormatter(secrets))
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, settings.log_level))
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
