"""The pyfunc ``loader_module`` inside every MLflow model mlops-bot publishes: loads ``model.skops``, no pickle.

An MLflow model written by mlops-bot looks like::

    MLmodel                              python_function.loader_module = mlops_bot_mlflow_flavor
    code/mlops_bot_mlflow_flavor.py      this file (``code_paths``), so any MLflow tool can load the model
    data/artifact/                       the bot's own artifact folder, unchanged: model.skops,
                                         metadata.json, MODEL_CARD.md, the reference profile

``mlflow.pyfunc.load_model("models:/churn@production")`` calls ``_load_pyfunc(<model>/data/artifact)``.
Nothing is unpickled: skops builds only the types it is told to trust. Where mlops-bot is installed,
the loading is ``pipeline.package.load_model``'s, so the trust policy is the bot's own (types from
scikit-learn, NumPy and SciPy, plus those the project lists in ``model.trusted_types``, recorded in
metadata.json); elsewhere this file applies the same policy by itself.

The file is copied into each model under a name of its own (``mlops_bot_mlflow_flavor``), so it
imports nothing from MLflow and, at module level, nothing from mlops-bot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
# The same roots as pipeline.package's, for a machine without mlops-bot.
TRUSTED_MODULE_ROOTS = ("sklearn", "numpy", "scipy")


def load_estimator(artifact: str | Path) -> Any:
    """The estimator in the bot's artifact folder, loaded under the bot's trust policy."""
    folder = Path(artifact)
    trusted = _trusted_types(folder)
    try:
        from pipeline.package import load_model
    except ImportError:  # a machine with MLflow but without mlops-bot: the same rules, applied here
        return _load_without_the_bot(folder, trusted)
    return load_model(folder, extra_trusted=trusted)


def _trusted_types(folder: Path) -> tuple[str, ...]:
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        return ()
    return tuple(json.loads(metadata.read_text(encoding="utf-8")).get("trusted_types") or ())


def _load_without_the_bot(folder: Path, trusted: tuple[str, ...]) -> Any:
    import skops.io

    path = folder / MODEL_FILE
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [t for t in untrusted if t.split(".")[0] not in TRUSTED_MODULE_ROOTS and t not in trusted]
    if refused:
        raise ValueError(f"{path} contains types that are not trusted: {', '.join(refused)}; "
                         "list them in the project's model.trusted_types if they are its own")
    return skops.io.load(path, trusted=untrusted)


class _SkopsModel:
    """What pyfunc wraps: ``predict(data, params=None)`` of the loaded estimator."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        return self.estimator.predict(data)


def _load_pyfunc(data_path: str) -> _SkopsModel:
    return _SkopsModel(load_estimator(data_path))
