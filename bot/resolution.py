"""Whether a retrain resolved its episode, measured rather than assumed.

After a retrained version is promoted for a retrain ticket, the batches that raised the episode are
checked again against the new version's reference profile, and, where labels exist, the old and the
new model are compared on the newest labelled production rows (held out by the run). The ticket is
closed only when the drift is gone or performance on recent data is back within the project's gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Resolution", "judge_resolution", "recheck_batches"]


@dataclass(frozen=True)
class Resolution:
    drift_persists: tuple[str, ...] | None  # features still drifting; None when no batch could be checked
    performance_problems: tuple[str, ...] | None  # metrics still outside the gates; None without labels
    checked_batches: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drift_gone(self) -> bool:
        return self.drift_persists is not None and not self.drift_persists

    @property
    def performance_restored(self) -> bool:
        return self.performance_problems is not None and not self.performance_problems

    @property
    def resolved(self) -> bool:
        return self.drift_gone or self.performance_restored

    def summary(self, model: str, version: int) -> str:
        """One line for the ticket and chat: what was measured after the promotion."""
        parts = [f"{model} v{version} promoted"]
        if self.drift_persists:
            parts.append("drift persists in " + ", ".join(self.drift_persists[:8])
                         + (f" and {len(self.drift_persists) - 8} more" if len(self.drift_persists) > 8 else ""))
        elif self.drift_gone:
            parts.append(f"no drift left in the {len(self.checked_batches)} batch(es) that raised this ticket")
        if self.performance_problems:
            parts.extend(self.performance_problems)
        elif self.performance_restored:
            parts.append("performance on recent labelled data is within the gates")
        if self.drift_persists is None and self.performance_problems is None:
            parts.append("nothing could be measured (the episode's batches are gone and no labels arrived)")
        return "; ".join(parts)


def judge_resolution(*, drift_persists: list[str] | None, checked_batches: list[str], recent: dict[str, Any] | None,
                     validated: dict[str, float], primary: str, maximize: bool, max_drop: float,
                     limits: dict[str, dict[str, float | None]]) -> Resolution:
    """Combine the drift re-check with the new model's scores on recent labelled rows.

    Performance is restored when every gate limit holds on the recent rows and the primary metric
    there is within ``max_drop`` of what the version scored at validation: the rule that raises a
    performance finding in production (``pipeline.performance.performance_drop``) no longer fires.
    """
    from pipeline.performance import limits_broken, performance_drop

    problems: list[str] | None = None
    if recent and recent.get("metrics"):
        after, before = recent["metrics"], recent.get("production_metrics") or {}
        problems = limits_broken(after, limits, data="recent data", before=before)
        if primary in validated and not any(p.startswith(f"{primary} ") for p in problems):
            found = performance_drop(after, validated, primary=primary, max_drop=max_drop, data="recent data",
                                     direction="maximize" if maximize else "minimize")
            if found is not None:
                problems.append(found.description)
    return Resolution(
        drift_persists=tuple(drift_persists) if drift_persists is not None else None,
        performance_problems=tuple(problems) if problems is not None else None,
        checked_batches=tuple(checked_batches),
    )


def recheck_batches(version_dir: Path, batches: list[Path], *, drift_settings: dict[str, Any],
                    model_name: str) -> tuple[list[str] | None, list[str]]:
    """The features that still drift in ``batches`` against the version's reference profile.

    Returns ``(features, checked)``; ``features`` is None when no batch could be read (gone or broken).
    """
    from pipeline.drift import DriftConfig, DriftInputError, check_drift

    config = DriftConfig.from_dict(drift_settings)
    persisting: dict[str, None] = {}
    checked = []
    for path in batches:
        if not path.is_file():
            continue
        try:
            report = check_drift(version_dir, path, config=config, model=None, model_name=model_name)
        except DriftInputError:
            continue
        checked.append(path.name)
        persisting.update(dict.fromkeys(feature.name for feature in report.drifted_features))
    return (list(persisting) if checked else None), checked

