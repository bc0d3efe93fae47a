"""What the bot writes for people: run reports, drift tickets, chat lines, the digest. Pure text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "digest_text",
    "drift_chat_text",
    "drift_ticket_body",
    "drift_ticket_title",
    "metrics_table",
    "primary_metric_text",
    "run_chat_text",
    "run_report",
    "run_started",
]

_STATUS_WORDS = {
    "succeeded": "✅ succeeded",
    "not_promoted": "⚠️ not promoted",
    "failed": "❌ failed",
    "running": "⏳ running",
}


def run_started(model: str, run_id: str, why: str) -> str:
    return f"⏳ **{model}**: pipeline run `{run_id}` started ({why}). I'll update this comment with the result."


def metrics_table(validation: dict[str, Any] | None) -> str:
    """Candidate against production, metric by metric, as a Markdown table."""
    if not validation:
        return ""
    production = validation.get("production") or {}
    prod_metrics = production.get("metrics") or {}
    difference = production.get("difference") or {}
    label = f"production v{production['version']}" if production.get("version") else "production"
    lines = [f"| metric | this run | {label} | difference |", "|---|---:|---:|---:|"]
    for name, value in (validation.get("metrics") or {}).items():
        prod = prod_metrics.get(name)
        diff = difference.get(name)
        lines.append(f"| {name} | {value:.4f} | {'—' if prod is None else f'{prod:.4f}'} | "
                     f"{'—' if diff is None else f'{diff:+.4f}'} |")
    if production.get("note"):
        lines.append(f"\n_{production['note']}_")
    return "\n".join(lines)


def run_report(result: dict[str, Any]) -> str:
    """The comment on a change or command: verdict, metrics table, gates, stages."""
    model, status = result.get("model", "?"), result.get("status", "?")
    version = result.get("version")
    headline = f"{_STATUS_WORDS.get(status, status)}: **{model}** pipeline run `{result.get('run_id')}`"
    lines = [headline, ""]
    if status == "failed":
        lines += [f"Failed in **{result.get('failed_stage')}**: {result.get('error')}", ""]
    elif result.get("promoted"):
        lines += [f"Model **{model} v{version}** is now in production.", ""]
    elif status == "not_promoted":
        lines += [f"**{model} v{version}** was registered but **not promoted**:"]
        lines += [f"- {reason}" for reason in result.get("reasons", [])] + [""]
    elif version is not None:
        lines += [f"**{model} v{version}** registered as a candidate (not deployed).", ""]
    table = metrics_table(result.get("validation"))
    if table:
        lines += [table, ""]
    gates = (result.get("validation") or {}).get("gates") or []
    if gates:
        lines += ["<details><summary>Gates</summary>", "", "| gate | verdict | detail |", "|---|---|---|"]
        lines += [f"| {g['name']} | {'pass' if g['passed'] else '**fail**'} | {g['detail']} |" for g in gates]
        lines += ["", "</details>", ""]
    stages = result.get("stages") or []
    if stages:
        lines.append("Stages: " + " → ".join(
            f"{s['name']} {s['status']}" + (f" ({s['duration_s']:.1f}s)" if s.get("duration_s") is not None else "")
            for s in stages))
    return "\n".join(lines).strip()


def run_chat_text(result: dict[str, Any], where: str) -> str:
    model, version = result.get("model", "?"), result.get("version")
    status = _STATUS_WORDS.get(result.get("status", ""), result.get("status", ""))
    primary = primary_metric_text(result)
    bits = [f"{status}: {model}" + (f" v{version}" if version is not None else ""), where]
    if primary:
        bits.append(primary)
    if result.get("status") == "failed":
        bits.append(f"failed in {result.get('failed_stage')}")
    elif result.get("promoted"):
        bits.append("promoted to production")
    return " · ".join(bits)


def primary_metric_text(result: dict[str, Any]) -> str:
    validation = result.get("validation") or {}
    metrics = validation.get("metrics") or {}
    if not metrics:
        return ""
    name = next(iter(metrics))
    diff = ((validation.get("production") or {}).get("difference") or {}).get(name)
    return f"{name} {metrics[name]:.4f}" + (f" ({diff:+.4f} vs production)" if diff is not None else "")


def drift_ticket_title(model: str, severity: str) -> str:
    return f"Retrain {model}: {severity} data drift"


def drift_ticket_body(model: str, version: int, severity: str, markdown_report: str, report_dir: str,
                      checked_at: datetime) -> str:
    return "\n".join([
        f"Production data for **{model}** (production model v{version}) has drifted: severity **{severity}**.",
        f"Last checked {checked_at:%Y-%m-%d %H:%M} UTC. This ticket is kept up to date while the drift lasts.",
        "",
        markdown_report.strip(),
        "",
        f"Full report: `{report_dir}`" if report_dir else "",
        "",
        "Type `/retrain` here to train a new model on fresh data; I'll close this ticket when it is in production.",
    ]).strip()


def drift_chat_text(model: str, severity: str, features: list[str], ticket: str) -> str:
    shown = ", ".join(features[:5]) + (f" and {len(features) - 5} more" if len(features) > 5 else "")
    return f"📉 {model}: {severity} data drift in {shown or 'the data'} · {ticket}"


def digest_text(day: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"📋 Daily digest, {day}"]
    for row in rows:
        production = f"v{row['version']} ({row['age']} old, {row['health']})" if row.get("version") else "no production model"
        lines.append(f"• {row['model']}: {production}; open retrain tickets: {row['tickets'] or 'none'}; "
                     f"runs in the last day: {row['runs']}")
    return "\n".join(lines)
