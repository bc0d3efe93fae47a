"""How a drift report reads: the stable JSON document, a Markdown summary, a PNG chart.

The JSON layout is documented in docs/drift.md and versioned by ``schema_version``;
fields are only ever added within a version. matplotlib is imported inside the PNG
function so that importing the drift engine stays light.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.drift import DriftReport, FeatureDrift

__all__ = ["report_to_dict", "report_to_json", "report_to_markdown", "write_report_png"]

_SCHEMA_NAME = "mlops-bot/drift-report"
_MARKDOWN_ROWS = 25


def report_to_dict(report: DriftReport) -> dict[str, Any]:
    """The report as plain JSON-ready data; non-finite numbers become null."""
    from pipeline.drift import REPORT_SCHEMA_VERSION

    counted = [f for f in report.features if not f.ignored]
    drifted = [f for f in counted if f.drifted]
    document = {
        "schema": _SCHEMA_NAME,
        "schema_version": REPORT_SCHEMA_VERSION,
        "drifted": report.drifted,
        "severity": report.severity,
        "reasons": list(report.reasons),
        "model": report.model,
        "created_at": report.created_at,
        "summary": {
            "features": len(counted),
            "drifted_features": len(drifted),
            "drifted_share": len(drifted) / len(counted) if counted else 0.0,
            "drifted_names": [f.name for f in report.drifted_features],
            "key_features_drifted": [f.name for f in drifted if f.name in report.config.key_features],
        },
        "reference": dict(report.reference),
        "current": dict(report.current),
        "schema_changes": dict(report.schema_changes),
        "features": [_feature_to_dict(feature) for feature in report.features],
        "multivariate": _multivariate_to_dict(report),
        "prediction": _feature_to_dict(report.prediction) if report.prediction else None,
        "performance": _performance_to_dict(report),
        "notes": list(report.notes),
        "config": report.config.to_dict(),
    }
    return _clean(document)


def report_to_json(report: DriftReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False)


def _feature_to_dict(feature: FeatureDrift) -> dict[str, Any]:
    return {
        "name": feature.name,
        "kind": feature.kind,
        "drifted": feature.drifted,
        "severity": feature.severity,
        "ignored": feature.ignored,
        "test": feature.test,
        "statistic": feature.statistic,
        "p_value": feature.p_value,
        "p_value_adjusted": feature.p_value_adjusted,
        "effect_size": feature.effect_size,
        "statistics": {name: dict(value) for name, value in feature.statistics.items()},
        "reference": dict(feature.reference),
        "current": dict(feature.current),
        "causes": list(feature.causes),
        "findings": list(feature.findings),
        "histogram": dict(feature.histogram) if feature.histogram else None,
    }


def _multivariate_to_dict(report: DriftReport) -> dict[str, Any] | None:
    result = report.multivariate
    if result is None:
        return None
    return {
        "method": "extra trees, cross-validated, reference rows against batch rows",
        "auc": result.auc, "auc_lower": result.auc_lower, "confidence": result.confidence,
        "drifted": result.drifted, "severity": result.severity, "rows_per_side": result.rows_per_side,
        "folds": result.folds,
        "top_features": [{"name": name, "importance": value} for name, value in result.top_features],
    }


def _performance_to_dict(report: DriftReport) -> dict[str, Any] | None:
    result = report.performance
    if result is None:
        return None
    return {
        "metric": result.metric, "reference": result.reference, "current": result.current,
        "ci_low": result.ci_low, "ci_high": result.ci_high, "confidence": result.confidence,
        "rows": result.rows, "degraded": result.degraded, "severity": result.severity,
        "higher_is_better": result.higher_is_better,
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN, infinity or NumPy scalars."""
    if isinstance(value, Mapping):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- Markdown

def report_to_markdown(report: DriftReport, link: str | None = None) -> str:
    """A summary for a ticket or a pull-request comment: verdict, then the drifted features."""
    counted = [f for f in report.features if not f.ignored]
    drifted = report.drifted_features
    verdict = "Drift detected" if report.drifted else "No drift"
    lines = [f"### {verdict}: severity **{report.severity}**", ""]
    source = report.current.get("source", "batch")
    lines.append(f"Model `{report.model}` · {source}: {report.current.get('rows', 0):,} rows against "
                 f"a reference of {report.reference.get('rows', 0):,} rows · "
                 f"{len(drifted)} of {len(counted)} features drifted")
    if link:
        lines[-1] += f" · [full report]({link})"
    lines.append("")
    lines.extend(f"- {reason}" for reason in report.reasons)
    lines.append("")
    if drifted:
        lines.append("| Feature | Severity | Test | Statistic | p-value (BH) | PSI | Distance | Reference | Current |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for feature in drifted[:_MARKDOWN_ROWS]:
            lines.append("| " + " | ".join([
                f"`{_escape(feature.name)}`", feature.severity, *_evidence(feature),
                _number(_value(feature, "psi")), _number(_distance(feature)),
                _escape(_summary(feature.kind, feature.reference)), _escape(_summary(feature.kind, feature.current)),
            ]) + " |")
        if len(drifted) > _MARKDOWN_ROWS:
            lines.append(f"\n{len(drifted) - _MARKDOWN_ROWS} more drifted features are in the JSON report.")
        lines.append("")
    findings = [(f.name, text) for f in report.features for text in f.findings
                if not text.startswith("the test is significant")]
    if findings:
        lines.append("**Findings**")
        lines.append("")
        lines.extend(f"- `{_escape(name)}`: {_escape(text)}" for name, text in findings[:_MARKDOWN_ROWS])
        lines.append("")
    changes = report.schema_changes
    if changes.get("extra_columns"):
        lines.append("Columns in the batch but not in the reference: "
                     + ", ".join(f"`{_escape(name)}`" for name in changes["extra_columns"][:20]))
        lines.append("")
    silenced = [f for f in counted
                if not f.drifted and any(t.startswith("the test is significant") for t in f.findings)]
    if silenced:
        lines.append(f"{len(silenced)} features changed significantly but by less than the effect floor, "
                     "so they do not count: " + ", ".join(f"`{_escape(f.name)}`" for f in silenced[:10]))
        lines.append("")
    if report.multivariate is not None:
        result = report.multivariate
        leaning = ", ".join(f"`{_escape(name)}`" for name, _ in result.top_features[:3])
        lines.append(f"**Domain classifier:** AUC {result.auc:.3f} (lower {result.confidence:.0%} bound "
                     f"{result.auc_lower:.3f}) on {result.rows_per_side:,} rows per side; "
                     f"{'drift' if result.drifted else 'no drift'}; it leans on {leaning}.")
        lines.append("")
    if report.prediction is not None:
        result = report.prediction
        lines.append(f"**Model outputs:** {'drifted' if result.drifted else 'no drift'} "
                     f"({_test_name(result)} {_number(result.statistic)}, p {_p_value(result.p_value)}, "
                     f"PSI {_number(_value(result, 'psi'))}).")
        lines.append("")
    if report.performance is not None:
        result = report.performance
        reference = "no reference value" if result.reference is None else f"reference {result.reference:.4g}"
        lines.append(f"**Performance:** {result.metric} {result.current:.4g} ({result.confidence:.0%} interval "
                     f"{result.ci_low:.4g} to {result.ci_high:.4g}, {result.rows:,} labelled rows), {reference}; "
                     f"{'degraded' if result.degraded else 'not degraded'}.")
        lines.append("")
    if report.notes:
        lines.extend(f"_Note: {_escape(note)}_" for note in report.notes)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _evidence(feature: FeatureDrift) -> list[str]:
    """Test, statistic and adjusted p-value of what made the feature drift."""
    if "schema" in feature.causes:
        return ["schema", "—", "—"]
    if "distribution" not in feature.causes and "missing_rate" in feature.causes:
        missing = feature.statistics["missing_rate"]
        return ["missing rate", f"{missing['value'] * 100:+.1f} pts", _p_value(missing.get("p_value_adjusted"))]
    return [_test_name(feature), _number(feature.statistic), _p_value(feature.p_value_adjusted)]


def _test_name(feature: FeatureDrift) -> str:
    return {"ks": "KS", "chi2": "chi-square"}.get(feature.test or "", "schema" if not feature.test else feature.test)


def _value(feature: FeatureDrift, name: str) -> float | None:
    statistic = feature.statistics.get(name)
    return statistic.get("value") if statistic else None


def _distance(feature: FeatureDrift) -> float | None:
    if "wasserstein" in feature.statistics:
        return feature.statistics["wasserstein"].get("normalised")
    return _value(feature, "jensen_shannon")


def _summary(kind: str, summary: Mapping[str, Any]) -> str:
    if not summary or summary.get("rows") is None:
        return "—"
    parts = []
    if kind == "numeric" and summary.get("mean") is not None:
        parts.append(f"mean {_number(summary['mean'])}, sd {_number(summary.get('std'))}, "
                     f"median {_number(summary.get('median'))}")
    if kind == "categorical" and summary.get("top") is not None:
        parts.append(f"{summary.get('categories')} categories, top {summary['top']!r} {summary['top_share']:.0%}")
    rate = summary.get("missing_rate")
    if rate:
        parts.append(f"{rate:.1%} missing")
    return "; ".join(parts) or "no values"


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 1e-300" if value < 1e-300 else f"{value:.2g}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- PNG

def write_report_png(report: DriftReport, path: Path, *, top: int = 6) -> None:
    """Reference against batch distributions of the most drifted features (or the largest effects)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    candidates = [f for f in report.features if f.histogram]
    if any(f.drifted for f in candidates):  # the drifted ones; without drift, the largest effects
        candidates = [f for f in candidates if f.drifted]
    chosen = sorted(candidates, key=lambda f: -(f.effect_size or 0.0))[:top]
    if report.prediction is not None and report.prediction.drifted and report.prediction.histogram:
        chosen = chosen[: top - 1] + [report.prediction]  # the model's outputs, last
    columns = min(3, max(1, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows + 0.7), squeeze=False)
    verdict = "drift detected" if report.drifted else "no drift"
    title = (f"{report.model}: {verdict} (severity {report.severity}) — "
             f"{sum(f.drifted for f in report.features)} of {len(report.features)} features drifted")
    performance = report.performance
    if performance is not None and performance.degraded and performance.reference is not None:
        title += f"; {performance.metric} {performance.reference:.3f} → {performance.current:.3f}"
    figure.suptitle(title, fontsize=12)
    for axis in axes.flat[len(chosen):]:
        axis.axis("off")
    if not chosen:
        axes[0][0].text(0.5, 0.5, "no distribution to show", ha="center", va="center")
    for axis, feature in zip(axes.flat, chosen):
        _plot_feature(axis, feature, "model outputs" if feature is report.prediction else feature.name)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_feature(axis: Any, feature: FeatureDrift, name: str) -> None:
    histogram = feature.histogram
    reference_colour, current_colour = "#4C72B0", "#DD8452"
    if "edges" in histogram:
        edges = histogram["edges"]
        axis.stairs(histogram["reference"], edges, fill=True, alpha=0.45, color=reference_colour, label="reference")
        axis.stairs(histogram["current"], edges, fill=False, linewidth=2, color=current_colour, label="batch")
    else:
        names = [name if len(name) <= 12 else name[:11] + "…" for name in histogram["categories"]]
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], histogram["reference"], width=0.4, color=reference_colour,
                 label="reference")
        axis.bar([p + 0.2 for p in positions], histogram["current"], width=0.4, color=current_colour, label="batch")
        axis.set_xticks(list(positions), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("share of rows", fontsize=8)
    detail = []
    if feature.statistic is not None:
        detail.append(f"{_test_name(feature)} {_number(feature.statistic)}")
    psi = _value(feature, "psi")
    if psi is not None:
        detail.append(f"PSI {_number(psi)}")
    missing = feature.statistics.get("missing_rate", {})
    if "missing_rate" in feature.causes:
        detail.append(f"missing {missing['reference']:.0%} → {missing['current']:.0%}")
    title = f"{name} — {feature.severity if feature.drifted else 'no drift'}"
    axis.set_title(title + ("\n" + ", ".join(detail) if detail else ""), fontsize=9,
                   color="#B22222" if feature.drifted else "black")
    axis.tick_params(labelsize=8)
    axis.legend(fontsize=7, frameon=False)
