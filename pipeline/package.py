"""Package: a model version's artifact folder, and reading one back.

The folder holds ``model.skops`` (skops format: loading constructs only allowed types and never
runs pickle), ``metadata.json`` (what produced the model, its metrics and feature schema), a
``MODEL_CARD.md`` for people, and the reference profile the drift monitor compares batches with.
"""

from __future__ import annotations

import importlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

# pandas, the profile and training come in where they are used: the bot's process imports this
# module only to write a version's descriptor, and would otherwise keep some 80 MB of them resident.
if TYPE_CHECKING:
    import pandas as pd

    from pipeline.train import TrainedModel

__all__ = [
    "METADATA_FILE",
    "MODEL_CARD_FILE",
    "MODEL_FILE",
    "ArtifactError",
    "UntrustedTypesError",
    "load_model",
    "package",
    "read_metadata",
    "read_profile",
    "record_reference_metric",
    "write_descriptor",
]

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
ARTIFACT_FORMAT = 1

# Types from these libraries may be built when a model is loaded; anything else must be named in
# the project's model.trusted_types, so a tampered artifact cannot make us construct arbitrary objects.
_TRUSTED_MODULE_ROOTS = ("sklearn", "numpy", "scipy")


class ArtifactError(RuntimeError):
    """A model artifact is missing, unreadable or refers to types we do not trust."""


class UntrustedTypesError(ArtifactError):
    """The artifact holds types of the project's own that ``model.trusted_types`` does not list."""

    def __init__(self, path: Path, refused: list[str], already_trusted: tuple[str, ...]):
        self.types = tuple(refused)
        # The whole setting, as it should read: what is trusted today plus what was refused.
        self.setting = "model.trusted_types = " + json.dumps([*dict.fromkeys([*already_trusted, *refused])])
        super().__init__(
            f"{path} contains types that are not trusted: {', '.join(refused)}; "
            f"if they are your own, list them in mlops.toml: {self.setting}"
        )


def package(
    trained: TrainedModel,
    directory: Path,
    *,
    model_name: str,
    training_features: pd.DataFrame,
    training_target: pd.Series,
    primary_metric: str | None = None,
    keep_raw: bool = False,
) -> dict[str, Any]:
    """Write the model and its reference profile into ``directory``; return the metadata so far."""
    import skops.io

    from pipeline.profile import build_reference_profile

    skops.io.dump(trained.estimator, directory / MODEL_FILE)
    profile = build_reference_profile(
        training_features,
        model=model_name,
        seed=trained.seed,
        predict=lambda rows: _reference_outputs(trained, rows),
        target=training_target,
        primary_metric=primary_metric,
        keep_raw=keep_raw,
    )
    profile.write(directory)
    classes = getattr(trained.estimator, "classes_", None)
    return {
        "format": ARTIFACT_FORMAT,
        "model": model_name,
        "task": trained.task,
        "params": trained.params,
        "seed": trained.seed,
        "features": trained.schema.to_list(),
        "target": {
            "name": str(training_target.name),
            "dtype": str(training_target.dtype),
            "classes": [_plain(c) for c in classes] if classes is not None else None,
        },
        "code_version": trained.code_version,
        "environment": trained.environment,
        "training_rows": trained.training_rows,
    }


def write_descriptor(directory: Path, metadata: dict[str, Any]) -> None:
    """``metadata.json`` and the model card, both from the same metadata."""
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    (directory / MODEL_CARD_FILE).write_text(model_card(metadata))


def read_metadata(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory / METADATA_FILE}: cannot be read: {exc}") from exc


def read_profile(directory: Path):
    from pipeline.profile import read_reference_profile

    return read_reference_profile(directory)


def record_reference_metric(directory: Path, value: float) -> None:
    """The primary metric on held-out rows, once validation knows it: the baseline for performance drift."""
    from pipeline.profile import record_metric_value

    record_metric_value(directory, float(value))


def load_model(directory: Path, *, extra_trusted: tuple[str, ...] = (), project_root: Path | None = None) -> Any:
    """Load ``model.skops``, constructing only types from trusted libraries or named by the user.

    ``project_root`` puts the model project's folder on the import path, for models that use
    classes of the project's own (listed in ``model.trusted_types``).
    """
    import skops.io

    from pipeline.train import project_on_path

    path = directory / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable skops file: {exc}") from exc
    refused = [t for t in untrusted if t.split(".")[0] not in _TRUSTED_MODULE_ROOTS and t not in extra_trusted]
    if refused:
        raise UntrustedTypesError(path, refused, extra_trusted)
    with project_on_path(project_root) if project_root is not None else nullcontext():
        try:
            return skops.io.load(path, trusted=untrusted)
        except Exception as exc:
            unimportable = _unimportable(untrusted)
            if unimportable:
                raise ArtifactError(
                    f"{path}: cannot be loaded: {'; '.join(unimportable)}; define each such class at the top level "
                    f"of a module in the model project folder{f' ({project_root})' if project_root else ''}, "
                    "e.g. features.py, build the model from there and list the class in model.trusted_types"
                ) from exc
            raise ArtifactError(f"{path}: cannot be loaded: {_one_line(exc)}") from exc


def _unimportable(type_names: list[str]) -> list[str]:
    """Why each of the project's own types cannot be imported where the model is being loaded.

    A class defined in the training script (``__main__``) or inside a function is saved under a
    name no other process can import, so the model loads only in the process that trained it.
    """
    problems = []
    for name in type_names:
        module_name, _, attribute = name.rpartition(".")
        if not module_name or module_name.split(".")[0] in _TRUSTED_MODULE_ROOTS:
            continue
        if module_name == "__main__":
            problems.append(f"{name} was defined in the script that trained the model, which a loader cannot import")
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a user's module can fail to import in any way
            problems.append(f"{name}: module {module_name!r} cannot be imported ({type(exc).__name__}: {_one_line(exc)})")
            continue
        if not hasattr(module, attribute):
            problems.append(f"{name}: {module_name} has no top-level {attribute!r} (a class defined inside a "
                            "function cannot be loaded)")
    return problems


def _one_line(exc: BaseException) -> str:
    """An exception's message as one line: errors here end up in one-line reports."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def model_card(metadata: dict[str, Any]) -> str:
    version = metadata.get("version")
    title = f"{metadata['model']} v{version}" if version is not None else metadata["model"]
    validation = metadata.get("validation") or {}
    production = validation.get("production") or {}
    lines = [f"# Model card: {title}", ""]
    if metadata.get("description"):
        lines += [metadata["description"], ""]
    lines += [
        "## Summary",
        "",
        f"- **Task:** {metadata['task']}",
        f"- **Estimator:** `{metadata.get('estimator', '?')}`",
        f"- **Trained:** {metadata.get('created_at', '?')} by run `{(metadata.get('run') or {}).get('run_id', '?')}`"
        f" ({(metadata.get('run') or {}).get('trigger', '?')})",
        f"- **Code:** {_describe_code(metadata.get('code_version'))}",
        f"- **Data:** {metadata.get('data', {}).get('fingerprint', '?')}, "
        f"{metadata.get('training_rows', '?')} training rows, {validation.get('held_out_rows', '?')} held out",
        "",
        "## Metrics on held-out data",
        "",
        "| metric | this model | production | difference |",
        "|---|---:|---:|---:|",
    ]
    difference = production.get("difference") or {}
    for name, value in (metadata.get("metrics") or {}).items():
        prod = (production.get("metrics") or {}).get(name)
        lines.append(
            f"| {name} | {value:.4f} | {_number(prod)} | {_number(difference.get(name), signed=True)} |"
        )
    if production.get("note"):
        lines += ["", f"_{production['note']}_"]
    gates = validation.get("gates") or []
    if gates:
        lines += ["", "## Gates", "", "| gate | verdict | detail |", "|---|---|---|"]
        lines += [f"| {g['name']} | {'pass' if g['passed'] else 'FAIL'} | {g['detail']} |" for g in gates]
    lines += ["", "## Features", "", "| name | type | kind |", "|---|---|---|"]
    lines += [f"| {f['name']} | {f['dtype']} | {f['kind']} |" for f in metadata.get("features", [])]
    lines += ["", "## Parameters", "", "```json", json.dumps(metadata.get("params", {}), indent=2, default=str), "```"]
    env = metadata.get("environment") or {}
    lines += ["", "## Environment", ""] + [f"- {name}: {value}" for name, value in env.items()]
    return "\n".join(lines) + "\n"


def _reference_outputs(trained: TrainedModel, features: pd.DataFrame):
    """What the model says on its own training rows: the baseline for prediction drift."""
    estimator = trained.estimator
    if trained.task == "classification" and hasattr(estimator, "predict_proba") and len(estimator.classes_) == 2:
        return estimator.predict_proba(features)[:, 1]
    # Multiclass and regression: the predicted labels or values, as the drift check computes them.
    return estimator.predict(features)


def _describe_code(code: dict[str, Any] | None) -> str:
    if not code:
        return "not a git repository"
    return f"commit `{code['commit'][:12]}` on {code.get('branch') or '?'}" + (" (uncommitted changes)" if code.get("dirty") else "")


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
