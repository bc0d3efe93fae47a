"""Deploy: run the project's own deploy command, if any, then promote the version in the registry."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.package import MODEL_FILE

__all__ = ["DeployError", "run_deploy_command"]

_TAIL_CHARS = 600


class DeployError(RuntimeError):
    """The deploy command failed; the message carries its exit status and the end of its output."""


def run_deploy_command(command: str, *, model: str, version: int, artifact: Path, cwd: Path, timeout: float) -> str:
    """Run ``command`` through the shell with the model's location in its environment; return its output.

    The command comes from the project's own mlops.toml, so the shell (variables, pipes) is the
    user's to use, just as in a CI job.
    """
    env = {
        **os.environ,
        "MLOPS_MODEL_NAME": model,
        "MLOPS_MODEL_VERSION": str(version),
        "MLOPS_MODEL_DIR": str(artifact),
        "MLOPS_MODEL_PATH": str(artifact / MODEL_FILE),
    }
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
