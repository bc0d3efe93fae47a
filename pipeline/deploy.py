"""Deploy: run the project's own deploy command, if any, then promote the version in the registry."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.child import child_environment, hide_from_children
from pipeline.package import MODEL_FILE

__all__ = ["DeployError", "deploy_environment", "run_deploy_command"]

log = logging.getLogger(__name__)

_TAIL_CHARS = 600


class DeployError(RuntimeError):
    """The deploy command failed; the message carries its exit status and the end of its output."""


def deploy_environment(*, model: str, version: int, artifact: Path, declared: Sequence[str] = (),
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The deploy command's environment: what the pipeline's child process gets (an allowlist, none
    of the bot's tokens), the variables the project declares in ``[deploy] env`` with their values
    from ``environ`` (default: this process's), and the model's location as ``MLOPS_MODEL_*``.

    A declared variable that ``environ`` lacks is left out (and logged), so the command's own
    tool reports what it misses, as it would in a shell where it is unset.
    """
    environ = os.environ if environ is None else environ
    missing = [name for name in declared if name not in environ]
    if missing:
        log.warning("[deploy] env names %s, not set in the bot's environment; the deploy command runs without",
                    ", ".join(missing))
    return {
        **child_environment(dict(environ)),
        **{name: environ[name] for name in declared if name in environ},
        "MLOPS_MODEL_NAME": model,
        "MLOPS_MODEL_VERSION": str(version),
        "MLOPS_MODEL_DIR": str(artifact),
        "MLOPS_MODEL_PATH": str(artifact / MODEL_FILE),
    }


def run_deploy_command(command: str, *, model: str, version: int, artifact: Path, cwd: Path, timeout: float,
                       env_names: Sequence[str] = ()) -> str:
    """Run ``command`` through the shell with the model's location in its environment; return its output.

    The command comes from the project's own mlops.toml (a fork's too, after ``/ok-to-test``), so
    the shell (variables, pipes) is the user's to use, just as in a CI job, but the bot's secrets
    are not: it sees ``deploy_environment``, with ``env_names`` (``[deploy] env``) added.
    """
    env = deploy_environment(model=model, version=version, artifact=artifact, declared=env_names)
    hide_from_children()  # nor this process's own memory and starting environment
    try:
        done = subprocess.run(
            command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"deploy command timed out after {timeout:g} s: {command}") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise DeployError(f"deploy command exited with status {done.returncode}: {output[-_TAIL_CHARS:] or '(no output)'}")
    return output[-_TAIL_CHARS:]
