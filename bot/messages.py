"""What the bot writes for people: run reports, drift tickets, chat lines, the digest. Pure text."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "digest_text",
    "drift_chat_text",
    "drift_ticket_body",
    "drift_ticket_title",
    "held_alert_text",
    "data_sources_text",
    "metrics_table",
    "performance_lines",
    "performance_table",
    "primary_metric_text",
    "production_removed_text",
    "recent_table",
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


def as_typed_in_chat(text: str) -> str:
    """Hints as a chat user types them: in Slack every command follows the slash command, so
    `/retrain` is `/mlops retrain` there."""
    return re.sub(r"`/(?!mlops\b)([A-Za-z][\w-]*)", r"`/mlops \1", text)  # as typed: `/Hi` too


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
    elif result.get("nothing_new"):
        lines += [f"Not retrained: {result['nothing_new']}.", ""]
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
    recent = recent_table(result.get("recent"))
    if recent:
        lines += [recent, ""]
    sources = data_sources_text(result.get("data"))
    if sources:
        lines += [sources, ""]
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


def recent_table(recent: dict[str, Any] | None) -> str:
    """Production and the new model on the newest held-out production rows: before and after."""
    if not recent or not recent.get("metrics"):
        return ""
    before = recent.get("production_metrics") or {}
    version = recent.get("production_version")
    lines = [f"On the {recent['rows']} most recent labelled production rows (held out):", "",
             f"| metric | {f'production v{version}' if version else 'production'} | this run |", "|---|---:|---:|"]
    for name, value in recent["metrics"].items():
        old = before.get(name)
        lines.append(f"| {name} | {'—' if old is None else f'{old:.4f}'} | {value:.4f} |")
    return "\n".join(lines)


def data_sources_text(data: dict[str, Any] | None) -> str:
    """Where the training data came from, when production contributed to it."""
    sources = (data or {}).get("sources") or []
    production = [s for s in sources if s.get("kind") != "training"]
    problems = (data or {}).get("production_problems") or []
    if not production and not problems:
        return ""
    lines = [f"Trained on {data.get('rows')} rows: " + ", ".join(
        f"`{s['path']}` ({s['rows']} rows{', ' + s['kind'] if s.get('kind') == 'labels' else ''})" for s in sources)
        + "."]
    lines += [f"- ⚠️ {problem}" for problem in problems]
    return "\n".join(lines)


def run_chat_text(result: dict[str, Any], where: str) -> str:
    model, version = result.get("model", "?"), result.get("version")
    status = _STATUS_WORDS.get(result.get("status", ""), result.get("status", ""))
    primary = primary_metric_text(result)
    bits = [f"{status}: {model}" + (f" v{version}" if version is not None else ""), where]
    if primary:
        bits.append(primary)
    if result.get("status") == "failed":
        bits.append(f"failed in {result.get('failed_stage')}")
    elif result.get("nothing_new"):
        bits.append("nothing new to learn from")
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


def drift_ticket_title(model: str, severity: str, reasons: Sequence[str] = ("drift",)) -> str:
    """``Retrain churn: high data drift``; with other reasons, all of them: ``Retrain churn: drift and performance``."""
    if list(reasons or ["drift"]) == ["drift"]:
        return f"Retrain {model}: {severity} data drift"
    return f"Retrain {model}: {_reasons_text(reasons)}"


def drift_ticket_body(model: str, version: int, severity: str, markdown_report: str, report_dir: str,
                      checked_at: datetime, *, reasons: Sequence[str] = ("drift",),
                      performance: Mapping[str, Any] | None = None, seen_again: Mapping[str, Any] | None = None) -> str:
    """The retrain ticket's body, rewritten at each finding.

    ``performance``: measured metrics to show (``{name: value}``, or ``{name: {column: value}}`` as a
    table). ``seen_again``: the latest finding that raised no alert, ``{"at", "batch", "count"}`` (ISO
    time, batch, findings since the last alert) and, while the cooldown holds alerts back, ``"until"``.
    """
    reasons = list(reasons or ["drift"])
    if reasons == ["drift"]:
        headline = f"Production data for **{model}** (production model v{version}) has drifted: severity **{severity}**."
    else:
        headline = (f"**{model}** (production model v{version}) needs retraining: {_reasons_text(reasons)}"
                    + (f" (drift severity **{severity}**)." if "drift" in reasons else "."))
    return "\n".join([
        headline,
        f"Last checked {checked_at:%Y-%m-%d %H:%M} UTC. This ticket is kept up to date while the "
        f"{'drift' if reasons == ['drift'] else 'episode'} lasts.",
        "",
        *([_seen_again_line(seen_again), ""] if seen_again else []),
        *([_performance_text(performance), ""] if performance else []),
        markdown_report.strip(),
        "",
        f"Full report: `{report_dir}`" if report_dir else "",
        "",
        "Type `/retrain` here to train a new model on fresh data; I'll close this ticket when it is in production.",
    ]).strip()


def batch_name(batch: str) -> str:
    """A batch as people know it, its file name. The monitor's identity of a batch adds its size and
    time (``b-17.csv@137075:1796282758``), so that a file rewritten in place is checked again, and
    the labels that arrived for it their count (``b-17.csv#labels:500``)."""
    return re.sub(r"(@\d+:\d+|#labels:\d+)$", "", batch)


def ticket_link(ticket_id: int, url: str = "") -> str:
    """A ticket as every message names it, ``ticket:12``, linked where the ticket has a web page
    (the local board's tickets have none)."""
    return f"[ticket:{ticket_id}]({url})" if url.startswith(("https://", "http://")) else f"ticket:{ticket_id}"


def drift_chat_text(model: str, severity: str, features: list[str], ticket: str,
                    reasons: Sequence[str] = ("drift",)) -> str:
    shown = ", ".join(features[:5]) + (f" and {len(features) - 5} more" if len(features) > 5 else "")
    reasons = list(reasons or ["drift"])
    what = f"{severity} data drift in {shown or 'the data'}" if "drift" in reasons else "retraining needed"
    why = f" ({_reasons_text(reasons)})" if reasons != ["drift"] else ""
    return f"📉 {model}{why}: {what} · {ticket}"


def held_alert_text(held: Mapping[str, Any]) -> str:
    """A finding the cooldown held back from chat: what, where, when, and until when."""
    return _seen_again_text(held) + f"; alerts held until {datetime.fromisoformat(held['until']):%Y-%m-%d %H:%M} UTC"


def _seen_again_text(seen: Mapping[str, Any]) -> str:
    count = int(seen.get("count") or 1)
    return (f"{seen.get('severity') or 'the'} {seen.get('what') or 'drift'} seen again at {datetime.fromisoformat(seen['at']):%Y-%m-%d %H:%M} "
            f"UTC in `{batch_name(str(seen.get('batch')))}`" + (f" ({count} findings since the last alert)" if count > 1 else ""))


def _seen_again_line(seen: Mapping[str, Any]) -> str:
    """The ticket's line on its latest finding that raised no alert."""
    if seen.get("until"):
        sign, text = "⏸️", f"{held_alert_text(seen)}."
    else:
        sign, text = "🔁", f"{_seen_again_text(seen)}: no material change since the last alert."
    return f"{sign} {text[0].upper()}{text[1:]}"


def _reasons_text(reasons: Sequence[str]) -> str:
    names = [str(reason) for reason in reasons]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _performance_text(performance: Mapping[str, Any]) -> str:
    """Measured performance: a table when each metric has several figures, else one line per metric."""
    def shown(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = {name: value for name, value in performance.items() if isinstance(value, Mapping)}
    lines = ["Performance on recent production data:"]
    if rows:
        columns = list(dict.fromkeys(column for value in rows.values() for column in value))
        lines += ["", f"| metric | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(shown(value.get(column, "—")) for column in columns) + " |"
                  for name, value in rows.items()]
    lines += [f"- {name}: {shown(value)}" for name, value in performance.items() if not isinstance(value, Mapping)]
    return "\n".join(lines)


def performance_table(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A batch's performance entry (from the monitor) as the ticket shows it: per metric, the model's
    validation score, what the batch measured (labels) and what was estimated before labels arrived."""
    measured = (entry.get("measured") or {}).get("metrics") or {}
    rows = (entry.get("measured") or {}).get("rows")
    estimated, validated = entry.get("estimated") or {}, entry.get("validated") or {}
    error = entry.get("estimate_error") or {}
    table: dict[str, Any] = {}
    for name in dict.fromkeys([*measured, *estimated]):
        row = {"validated": validated.get(name, "—")}
        if measured:
            row[f"measured ({rows} rows)"] = measured.get(name, "—")
        if estimated:
            row["estimated"] = estimated.get(name, "—")
        if error:
            row["estimate off by"] = error.get(name, "—")
        table[name] = row
    problems = (entry.get("finding") or {}).get("problems") or []
    if problems:
        table["finding"] = "; ".join(problems)
    return table


def performance_lines(state: dict[str, Any] | None) -> list[str]:
    """The production model's performance on production data: over the window of labelled rows,
    and on the newest batch (measured, or estimated before its labels arrive, with the estimate's error)."""
    if not state:
        return []
    lines = []
    window = state.get("window")
    if window and window.get("metrics"):
        validated = window.get("validated") or {}
        lines.append(f"performance of v{window.get('version')} on {window['rows']} labelled production rows: "
                     + ", ".join(f"{name} {value:.4f}" + (f" (validated {validated[name]:.4f})" if name in validated else "")
                                 for name, value in window["metrics"].items()))
    batch = state.get("last_batch")
    entry = (state.get("batches") or {}).get(batch) or {}
    if batch and (entry.get("measured") or entry.get("estimated")):
        bits = []
        if entry.get("measured"):
            bits.append("measured " + ", ".join(f"{n} {v:.4f}" for n, v in entry["measured"]["metrics"].items()))
        if entry.get("estimated"):
            bits.append("estimated " + ", ".join(f"{n} {v:.4f}" for n, v in entry["estimated"].items()))
        if entry.get("estimate_error"):
            bits.append("estimate off by " + ", ".join(f"{n} {v:.4f}" for n, v in entry["estimate_error"].items()))
        lines.append(f"newest batch {batch}: " + "; ".join(bits))
        for problem in (entry.get("finding") or {}).get("problems", []):
            lines.append(f"⚠️ {problem}")
    return lines


def digest_text(day: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"📋 Daily digest, {day}"]
    for row in rows:
        production = f"v{row['version']} ({row['age']} old, {row['health']})" if row.get("version") else "no production model"
        lines.append(f"• {row['model']}: {production}; open retrain tickets: {row['tickets'] or 'none'}; "
                     f"runs in the last day: {row['runs']}")
        lines += [f"  {line}" for line in row.get("performance", [])]
    return "\n".join(lines)


def production_removed_text(model: str, alias: str, version: int) -> str:
    """The chat line for a production alias deleted outside the bot (MLflow's UI, another tool).

    A rollback needs a version in production to roll back from, so the way back is a promotion.
    """
    return (f"⚠️ {model}: the {alias} alias was removed outside mlops-bot (it was on v{version}); nothing is in "
            f"production until a version is promoted: `/deploy N` puts version N back.")
