"""What each event owes: the planner, events → effects.

1. A change merged on the watched branch that touches the model project → one pipeline run for
   that commit; its result reported on the change (one comment, updated in place), as a commit
   status or check run, on every ticket the change links, and in chat.
2. Drift found → one open retrain ticket per model, opened once, updated in place, commented on
   only when the drift changes materially (and not inside the cooldown).
3. A command (typed, ticked in the ticket's checklist, clicked) → checked against the author's
   permission, acknowledged, done, answered.
4. A retrained model in production for a retrain ticket (promoted by its run, or its validated
   candidate deployed by a person) → measured, and the ticket closed only if the problem is gone.

Each rule returns the effects it owes as outbox rows (``NewEffect``), each with a key that makes it
once; the effect handlers (bot/delivery.py) carry them out. The planner reads the store, the
registry and, where an event lacks it, the source control; it writes nothing outside.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot import checklist, messages
from bot.commands import Request, parse, required_permission, respond, unknown_reply
from bot.commands.base import (
    CheckDrift,
    CommandContext,
    Invocation,
    Promote,
    Rollback,
    RunPipeline,
)
from bot.events import (
    ChangeMerged,
    ChecklistTicked,
    CommandGiven,
    DriftFound,
    Event,
    ModelPromoted,
    ModelRolledBack,
    ProductionRemoved,
    RunFinished,
    TicketClosed,
)
from bot.fork_guard import code_under_test
from bot.store import NewEffect, Store
from integrations.ports import (
    Chat,
    CheckAnnotation,
    CheckButton,
    CheckReport,
    Comment,
    EditsTicketBody,
    LinksChanges,
    Permission,
    PipelineEngine,
    ReportsChangedPaths,
    ReportsCheckRuns,
    ReportsCommitMessages,
    ResolvesPermissions,
    SourceControl,
    Target,
    Ticket,
    Tracker,
)
from integrations.ticket_references import find_ticket_references

__all__ = [
    "CHANNEL_ALERTS", "CHANNEL_DIGEST", "CHANNEL_PIPELINE", "CHECKLIST_WAITING", "CHECKS_SOURCE", "CHECK_NAME",
    "DEPLOY_BUTTON", "Planner", "Project", "SEVERITY_ORDER", "STATUS_CONTEXT", "target_from", "ticket_key",
]

_FIXES = re.compile(r"(?i)\b(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?)\s+AB#(\d+)")
SEVERITY_ORDER = {"none": 0, "low": 1, "medium": 2, "high": 3}
STATUS_CONTEXT = "mlops-bot/pipeline"
CHECK_NAME = STATUS_CONTEXT  # the check run's name, where runs are check runs (a GitHub App)
CHECKS_SOURCE = "github-checks"  # commands given by a click on a check run, not typed in a comment
DEPLOY_BUTTON = "deploy:v"  # a check run's "Deploy vN" button: its identifier is this and the version
CHANNEL_PIPELINE, CHANNEL_ALERTS, CHANNEL_DIGEST = "mlops-pipeline", "mlops-alerts", "mlops-digest"


@dataclass(frozen=True)
class Project:
    name: str
    path: Path
    repo_paths: tuple[str, ...]  # paths inside the repository whose change triggers a run
    # Served beside other model projects of the same repository (bot/routing.py): what a change
    # would otherwise name once for the whole repository (its run, its chat thread, its commit
    # status) is named per project, and a command's first argument may name the project.
    shared: bool = False

    @property
    def check_name(self) -> str:
        """The commit status's context and the check run's name."""
        return f"{CHECK_NAME} ({self.name})" if self.shared else CHECK_NAME

    def scoped(self, key: str) -> str:
        """``key`` made this project's where one change or one thread serves several projects."""
        return f"{key}:{self.name}" if self.shared else key

    def without_name(self, invocation: Invocation) -> Invocation:
        """``/retrain churn because ...`` for the churn project: its arguments without the name."""
        first, _, rest = invocation.args.strip().partition(" ")
        if not self.shared or first.lower() != self.name.lower():
            return invocation
        return replace(invocation, args=rest.strip())


class Planner:
    """The rules: ``effects_for(event)`` is what the event owes, over the ports and the state."""

    def __init__(self, *, settings, store: Store, registry, scm: SourceControl, tracker: Tracker, chat: Chat,
                 engine: PipelineEngine, project: Project, clock: Callable[[], datetime], view: CommandContext,
                 has_board: bool):
        self.settings, self.store, self.registry = settings, store, registry
        self.scm, self.tracker, self.chat, self.engine = scm, tracker, chat, engine
        self.project, self.clock = project, clock
        self.view = view  # what command handlers read (bot/lifecycle.py's CommandView)
        self.has_board = has_board  # a board people track retrain tickets on (a GitHub Project, Azure Boards)
        # A change's runs are check runs where the source control can show them (GitHub, as an App),
        # commit statuses elsewhere: asked once, here.
        self.reports_check_runs = isinstance(scm, ReportsCheckRuns)

    def effects_for(self, event: Event) -> list[NewEffect]:
        rule = {
            ChangeMerged: self._on_change_merged,
            CommandGiven: self._on_command,
            RunFinished: self._on_run_finished,
            DriftFound: self._on_drift,
            ModelPromoted: self._on_promoted,
            ModelRolledBack: self._on_rolled_back,
            ProductionRemoved: self._on_production_removed,
            TicketClosed: self._on_ticket_closed,
            ChecklistTicked: self._on_checklist_ticked,
        }[type(event)]
        return rule(event)

    # --- what the state says: the open ticket, who may do what ----------------------------------------------

    def touches_project(self, paths: tuple[str, ...]) -> bool:
        prefixes = [prefix.strip("/") for prefix in self.project.repo_paths]
        if "" in prefixes:  # the project is the whole repository
            return bool(paths)
        return any(path == prefix or path.startswith(prefix + "/") for path in paths for prefix in prefixes)

    def known_ticket(self, model: str) -> Ticket | None:
        """The model's open retrain ticket as the bot last saw it: no request to the tracker.

        Opening and closing go through the tracker itself (``find_open``), so this shortcut serves
        only answers and links, where a ticket closed by hand a moment ago does no harm.
        """
        state = self.store.get_state("episodes", model) or {}
        if not state.get("ticket_id"):
            return None
        return Ticket(id=int(state["ticket_id"]), key=ticket_key(model), title=state.get("ticket_title", ""),
                      state="open", url=state.get("ticket_url", ""))

    def permission(self, target: Target, author: str) -> Permission:
        """The author's level: from the repository for changes and tickets, from settings in chat."""
        if target.kind == "chat":
            levels = self.settings.slack_permissions
            if isinstance(self.chat, ResolvesPermissions):  # Slack also reads user groups
                return self.chat.permission(author, levels)
            return Permission[levels.get(author, levels.get("*", "read"))]
        return self.scm.permission(target.repo, author)

    def _command_permission(self, comment: Comment, invocations) -> Permission:
        """The author's level, asked for only when a command needs more than read: on hosts where
        whoever can comment can read (``commenters_can_read``), /status and /help cost no lookup."""
        needed = max((required_permission(i.name, self.settings.command_permissions) for i in invocations),
                     default=Permission.read)
        if needed <= Permission.read and comment.target.kind != "chat" and self.scm.commenters_can_read:
            return Permission.read
        return self.permission(comment.target, comment.author)

    # --- rule 1: a change merged ----------------------------------------------------------------------------

    def _on_change_merged(self, event: ChangeMerged) -> list[NewEffect]:
        change = event.change
        watched = self.settings.watch_branch or self.scm.branch
        if not change.paths and isinstance(self.scm, ReportsChangedPaths):
            # A webhook's pull request carries no file list; ask for it (a TransientError leaves the
            # event unstored, and the poller brings the merge again later).
            change = replace(change, paths=tuple(self.scm.change_paths(change.repo, change.number)))
        # AB#12 links work item 12 to the change whatever the change touches (once per pair).
        links = self._ab_links(change.target, change.url, change.title, f"{change.title}\n{change.body}", "description")
        # A pull request's commit messages, where the source reads them: asked for only when links can matter.
        if isinstance(self.tracker, LinksChanges) and isinstance(self.scm, ReportsCommitMessages):
            commits = "\n".join(self.scm.change_messages(change.repo, change.number))
            links += [e for e in self._ab_links(change.target, change.url, change.title, commits, "commits")
                      if e.key not in {link.key for link in links}]
        if change.branch != watched or not self.touches_project(change.paths):
            return links
        run_id = _run_id(self.project.scoped(f"{change.repo}:{change.commit}"))
        tickets = self.scm.linked_tickets(change, tuple(self.settings.ticket_patterns))
        origin = {
            "kind": "change", "target": _target_dict(change.target), "repo": change.repo, "commit": change.commit,
            "change": change.number, "title": change.title, "url": change.url,
            "tickets": [list(t) for t in tickets], "episode": self.episode_for(change.target),
            "fixes": sorted({int(n) for n in _FIXES.findall(f"{change.title}\n{change.body}")}),
        }
        why = f"merge of {change.target} by {change.author}" if change.author else f"merge of {change.target}"
        return [
            self._run_started_on_commit(change.repo, change.commit, run_id, change.number, why),
            self._upsert(change.target, f"run:{run_id}", messages.run_started(self.project.name, run_id, why)),
            self.chat_episode(origin["episode"], CHANNEL_PIPELINE,
                               f"⏳ {self.project.name}: pipeline running for {change.target} “{change.title}”"),
            self._pipeline_run(run_id, trigger="merge", reason=why, origin=origin, promote=True),
            *links,
        ]

    # --- rule 3: commands -----------------------------------------------------------------------------------

    def _on_command(self, event: CommandGiven) -> list[NewEffect]:
        comment = event.comment
        if comment.by_bot or comment.edited or comment.author == self.settings.bot_name:
            return []
        links = [] if comment.target.kind != "change" else self._ab_links(
            comment.target, comment.url.split("#")[0], "", comment.body, f"comments (by {comment.author})")
        parsed = parse(comment.body, limit=self.settings.max_commands_per_comment)
        if not parsed.invocations and not parsed.unknown:
            return links
        # A command typed in chat, or given by a click on a check run, has no comment to react to.
        clicked_or_chat = comment.target.kind == "chat" or event.source == CHECKS_SOURCE
        effects = links + ([] if clicked_or_chat else [self._react(comment, "eyes")])
        if parsed.unknown:
            effects.append(self.reply(comment.target, f"unknown:{comment.id}", unknown_reply(parsed.unknown).text))
        permission = self._command_permission(comment, parsed.invocations)
        context = self.view
        for index, invocation in enumerate(self.project.without_name(i) for i in parsed.invocations):
            request = Request(invocation=invocation, target=comment.target, author=comment.author,
                              model=self.project.name, permission=permission)
            reply = respond(request, context, overrides=self.settings.command_permissions)
            reply, code = code_under_test(self, comment, reply)  # a pull request's code; forks need /ok-to-test
            key = f"cmd:{event.source}:{comment.target.repo}:{comment.id}:{index}"
            effects.append(self.reply(comment.target, key, reply.text))
            origin = {
                "kind": "command", "target": _target_dict(comment.target), "comment": comment.id,
                "command": invocation.line, "author": comment.author, "repo": comment.target.repo,
                "episode": self.episode_for(comment.target),
            }
            origin.update(code)
            # An issue of the repository is one of the tracker's tickets only when the tracker keeps
            # them there: with Azure Boards, GitHub issue #11 is not work item 11.
            if comment.target.kind == "ticket" and (not self.scm.has_issues or self.tracker.tickets_in_repository):
                origin["ticket"] = comment.target.number
            for action in reply.actions:
                effects.extend(self._action_effects(action, key, origin))
        if parsed.dropped:
            effects.append(self.reply(comment.target, f"dropped:{comment.id}",
                                       f"I ran the first {self.settings.max_commands_per_comment} commands of that comment "
                                       f"and skipped {parsed.dropped}; put them in separate comments."))
        return effects

    def _action_effects(self, action, key: str, origin: dict[str, Any]) -> list[NewEffect]:
        model = self.project.name
        if isinstance(action, RunPipeline):
            # Code of an unmerged pull request is trained and validated, never promoted on its own:
            # merging it (or an explicit /deploy of the candidate) is the human decision.
            unmerged = bool(origin.get("head_ref"))
            promote = action.promote and not unmerged
            reason = action.reason + (" (unmerged pull request code: kept as a candidate)" if action.promote
                                      and unmerged else "")
            ticket = self.known_ticket(model) if promote else None
            if ticket is not None:
                origin = {**origin, "ticket": ticket.id}
            # A run of a change's code is that commit's check run from the start, where runs are
            # check runs (commit statuses say nothing until the result, as before).
            started = [self._run_started_on_commit(origin["repo"], origin["commit"], _run_id(key), origin.get("change"),
                                                   reason)] if self.reports_check_runs and origin.get("commit") else []
            return [*started,
                    self._pipeline_run(_run_id(key), trigger="command", reason=reason, origin=origin,
                                       promote=promote),
                    *self.board_effects(ticket.id if ticket else None, "retraining", _run_id(key))]
        if isinstance(action, Promote):
            return [NewEffect(f"{key}:promote", "registry.promote", {
                "model": model, "version": action.version, "reason": action.reason, "cause": key, "origin": origin,
            }, lane=f"registry:{model}")]
        if isinstance(action, Rollback):
            current = self.registry.production(model)
            return [NewEffect(f"{key}:rollback", "registry.rollback", {
                "model": model, "reason": action.reason, "cause": key, "origin": origin,
                "from_version": current.version if current else None,
            }, lane=f"registry:{model}")]
        if isinstance(action, CheckDrift):
            return [NewEffect(f"{key}:drift", "drift.check", {"model": model, "cause": key, "origin": origin},
                              lane=f"drift:{model}")]
        raise TypeError(f"unknown action {action!r}")

    # --- a run finished: report where people look; an episode measured, closed or kept open -----------------

    def _on_run_finished(self, event: RunFinished) -> list[NewEffect]:
        result = event.result
        origin = result.get("origin") or {}
        report = messages.run_report(result)
        effects: list[NewEffect] = []
        target = target_from(origin.get("target"))
        if target is not None:
            effects.append(self._upsert(target, f"run:{event.run_id}", report))
        if origin.get("commit") and self.reports_check_runs:
            effects.append(self._run_finished_on_commit(origin, event.run_id, result, report))
        elif origin.get("commit"):
            state = {"succeeded": "success", "not_promoted": "failure"}.get(event.status, "error")
            effects.append(self._status(origin["repo"], origin["commit"], state,
                                        _status_description(result), event.run_id))
        ours = _reference_name(self.tracker)
        for tracker_name, number in origin.get("tickets", []):
            if tracker_name != ours:
                continue
            effects.append(NewEffect(f"ticket-report:{event.run_id}:{number}", "tracker.comment", {
                "ticket_id": number, "body": f"Linked change {target}:\n\n{report}",
            }, lane=f"ticket:{number}"))
        episode = origin.get("episode") or f"run:{event.run_id}"
        where = str(target) if target else {"bootstrap": "first model"}.get(origin.get("kind", ""), "run")
        effects.append(self.chat_episode(episode, CHANNEL_PIPELINE, messages.run_chat_text(result, where),
                                          actions=_run_actions(result)))
        effects.append(self.chat_reply(episode, CHANNEL_PIPELINE, f"run-chat:{event.run_id}",
                                        f"Run `{event.run_id}`: {messages.run_chat_text(result, where)}"))
        ticket_id = origin.get("ticket")
        if ticket_id and result.get("version") is not None and not result.get("promoted") \
                and result.get("status") in {"succeeded", "not_promoted"} and not result.get("nothing_new"):
            # a validated candidate kept back (stage = "candidate", or a gate): a person decides, with /deploy
            effects += self.board_effects(ticket_id, "review", event.run_id, Version=result.get("version"))
            effects += self.checklist_refresh(int(ticket_id), f"run:{event.run_id}",
                                               f"v{result.get('version')} is validated and waits: tick “Deploy "
                                               f"v{result.get('version')}” to put it in production.")
        missed = self._production_rows_missed(result) if ticket_id else 0
        if missed:  # said instead of "nothing new": the runner could not see what was new
            effects += self._rows_missed_effects(int(ticket_id), result, missed)
        if ticket_id and result.get("nothing_new"):
            if not missed:
                effects += self._nothing_new_effects(int(ticket_id), result)
        elif result.get("promoted") and ticket_id:
            # Closed only once measured: the episode's batches re-checked, recent labelled rows compared.
            effects.append(self._resolve(int(ticket_id), result.get("model"), result.get("version"), event.run_id,
                                         result.get("validation"), result.get("recent")))
        if result.get("promoted") and self.tracker.reference_prefix == "AB#":
            # "Fixes AB#12": the work item is done once the change's model is in production.
            for number in origin.get("fixes", []):
                effects.append(NewEffect(f"fixes:{event.run_id}:{number}", "tracker.close", {
                    "ticket_id": number, "model": result.get("model"), "version": result.get("version"),
                    "run_id": event.run_id}, lane=f"ticket:{number}"))
        return effects

    def close_retrain_ticket(self, ticket_id: int, result: dict[str, Any], summary: str = "",
                              why: str = "resolved") -> list[NewEffect]:
        """The comment, the close and the chat that end an episode, owed once per ticket.

        Two runs may be for the same ticket (``/retrain`` on the ticket and on a change while it is
        open): the first to get here is the ticket's closer, recorded in the episode's state, and
        the other closes nothing (its report is on its own change, comment or thread). Nothing is
        closed for a ticket that is no longer the model's open retrain ticket (closed already, by
        hand or by the closer, or never a retrain ticket).
        """
        model, version, run_id = result.get("model"), result.get("version"), result.get("run_id")
        state = self.store.get_state("episodes", model) or {}
        closer = state.get("closer") or {}
        if closer.get("ticket_id") == ticket_id:
            if closer.get("run_id") != run_id:
                return []
        elif state.get("ticket_id") != ticket_id:
            return []
        else:  # written before the effects it owes: a repeat of this run finds itself the closer
            self.store.put_state("episodes", model, {**state, "closer": {"ticket_id": ticket_id, "run_id": run_id}})
        measured = f": {summary}" if summary else ""
        body = "\n\n".join(part for part in (
            f"✅ Retrained **{model} v{version}** is in production (run `{run_id}`){measured}. Closing this ticket.",
            messages.metrics_table(result.get("validation")),
            messages.recent_table(result.get("recent")),
        ) if part)
        episode = f"ticket:{ticket_id}"
        return [
            NewEffect(f"close-comment:{ticket_id}:{run_id}", "tracker.comment",
                      {"ticket_id": ticket_id, "body": body}, lane=f"ticket:{model}"),
            # the checklist's last revision, before the close in the same lane: no boxes left to tick
            *self.checklist_refresh(ticket_id, f"close:{run_id}", f"✅ resolved: {model} v{version} is in "
                                     "production and this ticket is closed.", final=True),
            NewEffect(f"close:{ticket_id}:{run_id}", "tracker.close",
                      {"ticket_id": ticket_id, "model": model, "version": version, "run_id": run_id},
                      lane=f"ticket:{model}"),
            self.chat_reply(episode, CHANNEL_ALERTS, f"close-chat:{ticket_id}",
                             f"✅ {model} v{version} is in production; ticket:{ticket_id} closed."),
            self.chat_episode(episode, CHANNEL_ALERTS, f"✅ {model}: {why} with v{version} · ticket:{ticket_id} closed"),
            *self.board_effects(ticket_id, "resolved", run_id, Version=version),
        ]

    def _nothing_new_effects(self, ticket_id: int, result: dict[str, Any]) -> list[NewEffect]:
        """A retrain that had nothing to learn from: said on the ticket and in chat; the ticket stays open."""
        model, run_id = result.get("model"), result.get("run_id")
        text = (f"⚠️ Not retrained: {result['nothing_new']}. This ticket stays open; `/deploy N` still promotes "
                "a version by hand.")
        return [
            NewEffect(f"nothing-new:{ticket_id}:{run_id}", "tracker.comment", {"ticket_id": ticket_id, "body": text},
                      lane=f"ticket:{model}"),
            self.chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"nothing-new-chat:{ticket_id}:{run_id}",
                             f"⚠️ {model}: {result['nothing_new']}; ticket:{ticket_id} stays open."),
        ]

    def _production_rows_missed(self, result: dict[str, Any]) -> int:
        """How many labelled production rows in the ``[retrain]`` window a retrain left out (0: none).

        A remote engine's runner (a workflow) sees the production folders only if the team gives them
        to it; a run that reports its data without a single production source, while the bot measured
        production on labelled rows in the window, trained on the old data again.
        """
        data = result.get("data")
        if not isinstance(data, dict) or any(source.get("kind") in {"batch", "labels"}
                                             for source in data.get("sources") or []):
            return 0
        window = (self.store.get_state("performance", self.project.name) or {}).get("window") or {}
        if not window.get("rows"):
            return 0
        from pipeline.spec import SpecError, load_project

        try:
            include = load_project(self.project.path).retrain.include_production
        except SpecError:
            return 0  # the run's own report says what is wrong with the project
        return int(window["rows"]) if include else 0

    def _rows_missed_effects(self, ticket_id: int, result: dict[str, Any], rows: int) -> list[NewEffect]:
        model, run_id = result.get("model"), result.get("run_id")
        data = result.get("data") or {}
        text = (f"⚠️ Run `{run_id}` ({self.engine.name}) trained on {data.get('rows', '?')} rows without any labelled "
                f"production row, yet {rows} labelled production rows of {model} are in the `[retrain]` window: "
                "the runner does not see the production folders. Give it the bot's `MLOPS_MONITOR_DIR` and "
                "`MLOPS_LABELS_DIR` (docs/retraining.md, \"Remote engines\"). This ticket stays open.")
        return [
            NewEffect(f"rows-missed:{ticket_id}:{run_id}", "tracker.comment", {"ticket_id": ticket_id, "body": text},
                      lane=f"ticket:{model}"),
            self.chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"rows-missed-chat:{ticket_id}:{run_id}",
                             f"⚠️ {model}: run `{run_id}` trained without the {rows} labelled production rows; "
                             f"ticket:{ticket_id} stays open."),
        ]

    # --- rule 2: drift --------------------------------------------------------------------------------------

    def _on_drift(self, event: DriftFound) -> list[NewEffect]:
        model = event.model
        origin = event.summary.get("origin") or {}
        effects: list[NewEffect] = []
        episode_state = self.store.get_state("episodes", model) or {}
        if event.data_problem:
            text = (f"⚠️ {model}: the production batch `{messages.batch_name(event.batch)}` could not be checked: "
                    f"{event.data_problem}")
            if episode_state.get("ticket_id"):
                effects.append(NewEffect(f"data-problem:{event.key}", "tracker.comment",
                                         {"ticket_id": episode_state["ticket_id"], "body": text}, lane=f"ticket:{model}"))
            effects.append(NewEffect(f"chat:{event.key}", "chat.post", {"channel": CHANNEL_ALERTS, "text": text},
                                     lane=f"chat:{CHANNEL_ALERTS}"))
        elif reasons := self._ticket_reasons(event):
            performance = event.summary.get("performance") or {}
            severity = max([event.severity if "drift" in reasons else "none",
                            (performance.get("finding") or {}).get("severity", "none")], key=SEVERITY_ORDER.get)
            effects.append(NewEffect(f"ticket:{event.key}", "tracker.drift", {
                "model": model, "version": event.version, "severity": severity, "batch": event.batch,
                "features": event.summary.get("features", []) if "drift" in reasons else [],
                "markdown": event.summary.get("markdown", ""),
                "report_dir": event.report_dir, "checked_at": event.summary.get("checked_at"),
                "reasons": reasons,
                **({"performance": messages.performance_table(performance)} if performance else {}),
            }, lane=f"ticket:{model}"))
        target = target_from(origin.get("target"))
        if target is not None:  # asked for with /drift: answer there, whatever the verdict
            if event.data_problem:
                text = f"The latest batch could not be checked: {event.data_problem}"
            else:
                verdict = f"**{event.severity}** drift" if event.drifted else "no drift"
                text = f"Drift check of **{model}** v{event.version} on `{messages.batch_name(event.batch)}`: {verdict}.\n\n" + \
                    event.summary.get("markdown", "")
            effects.append(self.reply(target, f"drift-reply:{event.key}", text.strip()))
        return effects

    def _ticket_reasons(self, event: DriftFound) -> list[str]:
        """Why the finding owes a retrain ticket: drift at or above the least severity that counts, and/or a
        performance finding (measured on labels, or estimated where ``[monitor] estimated_trigger``)."""
        drift = event.drifted and SEVERITY_ORDER[event.severity] >= SEVERITY_ORDER[self.settings.drift_min_severity]
        performance = bool(((event.summary.get("performance") or {}).get("finding") or {}).get("problems"))
        return ["drift"] * drift + ["performance"] * performance

    # --- promotions, rollbacks, closed tickets --------------------------------------------------------------

    def _on_promoted(self, event: ModelPromoted) -> list[NewEffect]:
        return self._registry_change_effects(event, f"🚀 **{event.model} v{event.version}** is now in production"
                                             + (f" (was v{event.previous})." if event.previous else ".")) \
            + self._resolution_of_deployed_candidate(event)

    def _resolution_of_deployed_candidate(self, event: ModelPromoted) -> list[NewEffect]:
        """A person put the open episode's validated candidate in production (``/deploy``, a ticked box,
        a check run's button, or the registry's alias moved outside the bot): the episode goes on as
        after an automatic promote, measured and closed only if resolved.

        The candidate is a version whose run was for the open ticket (its ``for_ticket`` link). The
        effect's key is the one an automatic promote of that run owes, so the measuring is owed once
        whichever way, and however often, the version reached production.
        """
        ticket = self.known_ticket(event.model)
        if ticket is None:
            return []
        version = self.registry.get(event.model, event.version)
        validation = version.metadata.get("validation") or {}
        for_ticket = any(link.relation == "for_ticket" and link.src_id == version.run_id
                         and link.dst_id == str(ticket.id) for link in self.store.links("run", version.run_id))
        if not for_ticket or not validation.get("passed"):
            return []  # not this episode's retrain, or a version forced past its validation
        return [self._resolve(ticket.id, event.model, event.version, version.run_id, validation,
                              version.metadata.get("recent"))]

    def _resolve(self, ticket_id: int, model: str, version: int, run_id: str, validation: dict[str, Any] | None,
                 recent: dict[str, Any] | None) -> NewEffect:
        """Whether ``version`` (made by ``run_id``) resolved the ticket's episode, measured before it is closed."""
        return NewEffect(f"resolve:{ticket_id}:{run_id}", "episode.resolve", {
            "ticket_id": int(ticket_id), "model": model, "version": version, "run_id": run_id,
            "validation": validation, "recent": recent,
        }, lane=f"ticket:{model}")

    def _on_rolled_back(self, event: ModelRolledBack) -> list[NewEffect]:
        return self._registry_change_effects(event, f"↩️ Rolled back **{event.model}** to v{event.version} "
                                             f"(v{event.previous} archived).")

    def _registry_change_effects(self, event, text: str) -> list[NewEffect]:
        origin = (self.store.effect(event.cause + (":promote" if event.kind == "model_promoted" else ":rollback"))
                  or None)
        effects = []
        target = target_from(((origin.payload if origin else {}).get("origin") or {}).get("target"))
        if target is not None:
            effects.append(self.reply(target, f"result:{event.key}", text))
        buttons = [{"command": "rollback", "model": event.model, "version": event.version}] \
            if event.kind == "model_promoted" else []
        effects.append(NewEffect(f"chat:{event.key}", "chat.post", {"channel": CHANNEL_PIPELINE, "text": text,
                                                                   **({"actions": buttons} if buttons else {})},
                                 lane=f"chat:{CHANNEL_PIPELINE}"))
        ticket = self.known_ticket(event.model)
        if ticket is not None:  # the open ticket's boxes follow production (a deploy box gone, a rollback box)
            effects += self.checklist_refresh(ticket.id, event.key, text.replace("**", ""))
        return effects

    def _on_production_removed(self, event: ProductionRemoved) -> list[NewEffect]:
        """Said where promotions are, once per removal: the event's key is the registry's record of it."""
        text = messages.production_removed_text(event.model, event.alias, event.previous)
        return [NewEffect(f"chat:{event.key}", "chat.post", {"channel": CHANNEL_PIPELINE, "text": text},
                          lane=f"chat:{CHANNEL_PIPELINE}")]

    def _on_ticket_closed(self, event: TicketClosed) -> list[NewEffect]:
        """A retrain ticket closed (by hand, or seen closed): its episode is over, and the next
        finding opens a new ticket at once."""
        state = self.store.get_state("episodes", self.project.name) or {}
        if state.get("ticket_id") == event.ticket_id:
            self.store.put_state("episodes", self.project.name, {**state, "ticket_id": None, "seen_again": None,
                                                                 "closed_at": self.clock().isoformat()})
        return []

    # --- the live checklist in the retrain ticket (bot/checklist.py; ticks read in bot/lifecycle.py) --------

    def _on_checklist_ticked(self, event: ChecklistTicked) -> list[NewEffect]:
        model = self.project.name
        open_ticket = self.known_ticket(model)
        if event.tracker != self.tracker.name or open_ticket is None or open_ticket.id != event.ticket_id:
            return []  # not the open retrain ticket (closed since, or another tracker's number)
        command = checklist.command_for(event.action)
        if command is None:
            return []  # not an id the bot writes
        box = {box.action: box for box in self.checklist_boxes(model)}.get(event.action)
        ticket_id, label = event.ticket_id, box.label if box else event.action

        def answer(text: str, status: str) -> list[NewEffect]:
            return [NewEffect(f"checklist-reply:{event.key}", "tracker.comment", {"ticket_id": ticket_id, "body": text},
                              lane=f"ticket:{model}"),
                    *self.checklist_refresh(ticket_id, event.key, status)]

        if box is None:  # ticked in an older revision whose box no longer holds (v3 deployed meanwhile, ...)
            return answer(f"“{event.action}” was ticked in an older version of the checklist and no longer "
                          "applies, so nothing was done. The boxes now show what can be done.",
                          f"“{event.action}” was out of date when ticked: nothing done.")
        if not event.editor:
            return answer(f"“{label}” was ticked, but GitHub does not tell me who edited an issue unless its "
                          "`issues` webhook reaches me, and a box acts with the permission of whoever ticked it. "
                          f"I unticked it. Type `{command}` here instead, or send the repository's *Issues* "
                          "events to the bot (GITHUB_WEBHOOK_SECRET).",
                          f"“{label}” ticked by someone I cannot name: nothing done.")
        target = Target("ticket", self.scm.repo, ticket_id)
        invocation = parse(command, limit=1).invocations[0]
        request = Request(invocation=invocation, target=target, author=event.editor, model=model,
                          permission=self.permission(target, event.editor))
        reply = respond(request, self.view, overrides=self.settings.command_permissions)
        if not reply.actions:  # refused (who may is in the reply), or nothing to do
            return answer(f"I unticked “{label}”: {reply.text}",
                          f"“{label}” ticked by @{event.editor}: not done (see the comments).")
        key = f"cmd:{event.key}"
        origin = {"kind": "command", "target": _target_dict(target), "comment": event.key,
                  "command": f"{command} (ticked)", "author": event.editor, "repo": target.repo,
                  "episode": f"ticket:{ticket_id}", "ticket": ticket_id}
        effects = answer(f"☑️ @{event.editor} ticked “{label}”. {reply.text}",
                         f"“{label}” ticked by @{event.editor}: {reply.text.split('. ')[0].replace('**', '')}.")
        for action in reply.actions:
            effects.extend(self._action_effects(action, key, origin))
        return effects

    def checklist_boxes(self, model: str) -> tuple[checklist.Box, ...]:
        """What can be done now: retrain; deploy the newest validated candidate newer than
        production (with its primary metric against production's); roll back to the previous version."""
        view = self.view
        production = view.production(model)
        live = production["version"] if production else None
        waiting = [v for v in view.versions(model) if v.get("stage") == "candidate" and v.get("passed")
                   and (live is None or int(v["version"]) > live)]
        candidate = None
        if waiting:
            newest = max(waiting, key=lambda v: int(v["version"]))
            candidate = (int(newest["version"]), _validated_note(newest, production))
        return checklist.boxes(candidate=candidate, previous=view.previous_production(model))

    def checklist_state(self, ticket_id: int) -> dict | None:
        return self.store.get_state("checklists", str(ticket_id))

    def checklist_refresh(self, ticket_id: int, cause: str, status: str, *, final: bool = False) -> list[NewEffect]:
        """The section rewritten (boxes unticked, recomputed) with ``status``, once per cause;
        ``final``: the episode is over, and no box is left."""
        if not isinstance(self.tracker, EditsTicketBody):
            return []
        return [NewEffect(f"checklist-refresh:{ticket_id}:{cause}", "checklist.refresh",
                          {"ticket_id": int(ticket_id), "model": self.project.name, "status": status,
                           **({"final": True} if final else {})}, lane=f"ticket:{self.project.name}")]

    # --- effect constructors: each effect once, by its key --------------------------------------------------

    def episode_for(self, target: Target) -> str:
        if target.kind == "ticket":
            return f"ticket:{target.number}"
        if target.kind == "chat":
            return f"chat:{target.repo}:{target.number}"
        return self.project.scoped(f"change:{target.repo}:{target.number}")

    def reply(self, target: Target, key: str, body: str) -> NewEffect:
        if target.kind == "chat":  # a command typed in chat is answered in the thread of its first answer
            return self.chat_reply(self.episode_for(target), target.repo, key, messages.as_typed_in_chat(body))
        return NewEffect(key, "scm.reply", {"target": _target_dict(target), "body": body}, lane=f"scm:{target.key}")

    def _upsert(self, target: Target, marker: str, body: str) -> NewEffect:
        key = f"{marker}:{hashlib.sha1(body.encode()).hexdigest()[:10]}"
        if target.kind == "chat":
            return self.chat_reply(self.episode_for(target), target.repo, key, body)
        return NewEffect(key, "scm.upsert", {"target": _target_dict(target), "marker": marker, "body": body},
                         lane=f"scm:{target.key}")

    def _ab_links(self, target: Target, url: str, title: str, text: str, where: str) -> list[NewEffect]:
        """``AB#12`` in a change's title, description, commits or comments: work item 12 linked to the
        change (a Hyperlink, or an Azure Repos pull request's artifact link) with a comment, once per
        pair whichever text names it first (the effect's key)."""
        if not isinstance(self.tracker, LinksChanges):
            return []
        ours, prefix = _reference_name(self.tracker), self.tracker.reference_prefix
        numbers = [n for name, n in find_ticket_references(text, tuple(self.settings.ticket_patterns)) if name == ours]
        url = url if url.startswith(("https://", "http://")) else ""  # a local commit has nothing to link to
        return [NewEffect(f"ab-link:{target.repo}:{target.number}:{number}", "tracker.link", {
            "ticket_id": number, "target": _target_dict(target), "url": url, "title": title,
            "body": f"🔗 Linked to {target} of {target.repo}"
                    f"{f' “{title}”' if title else ''}{f' ({url})' if url else ''}: mentioned as {prefix}{number} "
                    f"in its {where}.",
        }, lane=f"ticket:{number}") for number in numbers]

    def _react(self, comment: Comment, reaction: str) -> NewEffect:
        return NewEffect(f"react:{comment.target.repo}:{comment.id}:{reaction}", "scm.react", {
            "comment": {"id": comment.id, "target": _target_dict(comment.target), "author": comment.author},
            "reaction": reaction,
        }, lane=f"scm:{comment.target.key}")

    def _status(self, repo: str, commit: str, state: str, description: str, run_id: str) -> NewEffect:
        return NewEffect(f"status:{repo}:{commit}:{run_id}:{state}", "scm.status", {
            "repo": repo, "commit": commit, "state": state, "description": description[:140],
            "context": self.project.check_name,
        }, lane=f"status:{repo}:{commit}")

    def _run_started_on_commit(self, repo: str, commit: str, run_id: str, change: int | None, why: str) -> NewEffect:
        """The commit's word that its run started: the check run in progress, or a pending status."""
        if not self.reports_check_runs:
            return self._status(repo, commit, "pending", f"{self.project.name}: pipeline running", run_id)
        report = CheckReport(status="in_progress", title=f"{self.project.name}: pipeline running",
                             summary=messages.run_started(self.project.name, run_id, why))
        # ``planned_at`` orders a change's runs: the newest started is the one whose buttons count.
        return self._check_run(repo, commit, run_id, change, report, planned_at=self.clock().isoformat())

    def _run_finished_on_commit(self, origin: dict[str, Any], run_id: str, result: dict[str, Any],
                                report: str) -> NewEffect:
        """The check run completed: its conclusion, the report (metrics table) as its summary, the
        failure's causes as annotations, and *Deploy vN* when it validated a candidate that waits."""
        buttons = tuple(CheckButton(identifier=f"{DEPLOY_BUTTON}{action['version']}",
                                    label=f"Deploy v{action['version']}",
                                    description="Deploy this candidate to production")
                        for action in _run_actions(result) if action["command"] == "deploy")
        if buttons:
            report += (f"\n\n**Deploy v{result['version']}** above puts this candidate in production, as "
                       f"`/deploy {result['version']}` typed on the change would (same permission).")
        check = CheckReport(status="completed", conclusion=_check_conclusion(result),
                            title=f"{self.project.name}: {_status_description(result)}", summary=report,
                            annotations=self._failure_annotations(result, origin), buttons=buttons,
                            details_url=str(result.get("url") or ""))
        return self._check_run(origin["repo"], origin["commit"], run_id, origin.get("change"), check,
                               version=result.get("version"))

    def _check_run(self, repo: str, commit: str, run_id: str, change: int | None, report: CheckReport, *,
                   planned_at: str | None = None, version: int | None = None) -> NewEffect:
        state = report.conclusion or report.status
        return NewEffect(f"check:{repo}:{commit}:{run_id}:{state}", "scm.check_run", {
            "repo": repo, "commit": commit, "run_id": run_id, "name": self.project.check_name, "change": change,
            "planned_at": planned_at, "version": version, "report": _report_dict(report),
        }, lane=f"status:{repo}:{commit}")  # the statuses' lane: a run's start is shown before its end

    def _failure_annotations(self, result: dict[str, Any], origin: dict[str, Any]) -> tuple[CheckAnnotation, ...]:
        """Where in the repository a failed run's cause is, as far as its error names it: the
        ``mlops.toml`` lines of the keys it names (the data's path for a data file that cannot be
        read), or the line of the project's own code that raised."""
        if result.get("status") != "failed" or not result.get("error"):
            return ()
        base = (self.settings.project_path or (self.project.repo_paths or ("",))[0]).strip("/")
        spec_file = self._spec_file_of_run(origin, str(result["error"]), base)
        return _annotations_for(str(result["error"]), base, spec_file)

    def _spec_file_of_run(self, origin: dict[str, Any], error: str, base: str) -> Path | None:
        """The ``mlops.toml`` the run read: the one its error names, else the one in the checkout of
        its commit (``integrations/workspace.py``), else the bot's own project's."""
        named = _SPEC_FILE_IN_ERROR.search(error)
        candidates = [Path(named.group("file"))] if named else []
        if origin.get("commit"):
            candidates.append(Path(self.settings.data_dir) / "workspaces" / str(origin["commit"]) / base / "mlops.toml")
        candidates.append(self.project.path / "mlops.toml")
        return next((path for path in candidates if path.is_file()), None)

    def chat_episode(self, episode: str, channel: str, text: str, *, actions: list[dict] | None = None) -> NewEffect:
        """``actions``: buttons under the message (ChatAction fields), where the chat shows them."""
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        return NewEffect(f"episode:{episode}:{digest}", "chat.episode",
                         {"episode": episode, "channel": channel, "text": text,
                          **({"actions": actions} if actions else {})}, lane=f"chat:{episode}")

    def chat_reply(self, episode: str, channel: str, key: str, text: str) -> NewEffect:
        return NewEffect(key, "chat.reply", {"episode": episode, "channel": channel, "text": text},
                         lane=f"chat:{episode}")

    def _pipeline_run(self, run_id: str, *, trigger: str, reason: str, origin: dict[str, Any], promote: bool) -> NewEffect:
        return NewEffect(f"pipeline:{run_id}", "pipeline.run", {
            "project": self.project.name, "run_id": run_id, "trigger": trigger, "reason": reason,
            "origin": origin, "promote": promote,
        }, lane=f"pipeline:{self.project.name}")

    def board_effects(self, ticket_id: int | None, stage: str, cause: str, **fields: Any) -> list[NewEffect]:
        """The retrain ticket's card moved to ``stage`` on the board people track (when one is set),
        once per cause; ``fields`` (Model, Version, ...) filled where the board has them."""
        if not self.has_board or not ticket_id:
            return []
        return [NewEffect(f"board:{ticket_id}:{stage}:{cause}", "board.follow", {
            "ticket_id": int(ticket_id), "stage": stage,
            "fields": {name: str(value) for name, value in fields.items() if value not in (None, "")},
        }, lane=f"board:{ticket_id}")]


def ticket_key(model: str) -> str:
    return f"retrain:{model}"


# The checklist's status line until something is done from it.
CHECKLIST_WAITING = ("waiting for a decision. Tick a box to act, as if you typed its command here (with your "
                      "permission); I untick it once it is done.")


def _validated_note(candidate: dict[str, Any], production: dict[str, Any] | None) -> str:
    """``validated: accuracy 0.91 vs 0.87``: the candidate's primary metric beside production's."""
    from bot.commands.base import format_metric

    metric = candidate.get("primary_metric") or (production or {}).get("primary_metric")
    mine = (candidate.get("metrics") or {}).get(metric) if metric else None
    if mine is None:
        return "validated"
    theirs = ((production or {}).get("metrics") or {}).get(metric)
    return f"validated: {metric} {format_metric(mine)}" + (f" vs {format_metric(theirs)}" if theirs is not None else "")


def _run_id(cause: str) -> str:
    return "run-" + hashlib.sha1(cause.encode()).hexdigest()[:12]


def _reference_name(tracker: Tracker) -> str:
    """What ``find_ticket_references`` calls a reference to one of the tracker's tickets: ``azure``
    for ``AB#12``, ``local`` for ``#12``."""
    return "azure" if tracker.reference_prefix == "AB#" else "local"


def _target_dict(target: Target) -> dict[str, Any]:
    return {"kind": target.kind, "repo": target.repo, "number": target.number}


def target_from(data: dict[str, Any] | None) -> Target | None:
    return Target(data["kind"], data["repo"], int(data["number"])) if data else None


def _run_actions(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished run's buttons: roll back what it deployed, or deploy the candidate it validated."""
    version, model = result.get("version"), result.get("model", "")
    if version is None or not model:
        return []
    if result.get("promoted"):
        return [{"command": "rollback", "model": model, "version": version}]
    if result.get("status") == "succeeded":
        return [{"command": "deploy", "model": model, "version": version}]
    return []


def _status_description(result: dict[str, Any]) -> str:
    status = result.get("status")
    if status == "failed":
        return f"failed in {result.get('failed_stage')}"
    primary = messages.primary_metric_text(result)
    verdict = "promoted" if result.get("promoted") else ("not promoted" if status == "not_promoted" else "validated")
    return f"v{result.get('version')} {verdict}" + (f": {primary}" if primary else "")


def _check_conclusion(result: dict[str, Any]) -> str:
    """A finished run as a check run's conclusion: a retrain with nothing new to learn is neutral."""
    status = result.get("status")
    if status == "succeeded":
        return "success"
    return "neutral" if status == "not_promoted" and result.get("nothing_new") else "failure"


def _report_dict(report: CheckReport) -> dict[str, Any]:
    return {"status": report.status, "conclusion": report.conclusion, "title": report.title,
            "summary": report.summary, "details_url": report.details_url,
            "annotations": [vars(a) for a in report.annotations], "buttons": [vars(b) for b in report.buttons]}


# A failed run's error, as pipeline/run.py words it: the spec file's path first for a bad mlops.toml,
# "file.py:12 ..." for the project's own code, "(at line 3, column 7)" in tomllib's syntax errors.
_SPEC_FILE_IN_ERROR = re.compile(r"(?P<file>[^\s:]*mlops\.toml):")
_CODE_LINE_IN_ERROR = re.compile(r"^(?P<file>[\w./-]+\.py):(?P<line>\d+)\b")
_TOML_LINE_IN_ERROR = re.compile(r"\(at line (?P<line>\d+)")
_KEY_IN_ERROR = re.compile(r"'(?P<quoted>[A-Za-z_][\w.-]*)'|\b(?P<dotted>[a-z_]+(?:\.[a-z_]+)+)\b")
_TOML_TABLE = re.compile(r"^\s*\[\[?\s*(?P<name>[\w.-]+)\s*\]\]?")
_TOML_KEY = re.compile(r"^\s*(?P<name>[\w-]+)\s*=")


def _annotations_for(error: str, base: str, spec_file: Path | None) -> tuple[CheckAnnotation, ...]:
    """The repository lines a failed run's ``error`` names, as failure annotations (``base``: the
    project's folder in the repository; ``spec_file``: the ``mlops.toml`` the run read, if found)."""
    where = (lambda name: f"{base}/{name}" if base else name)
    first_line = error.splitlines()[0][:1000]
    code = _CODE_LINE_IN_ERROR.match(error)
    if code:  # the project's own code raised: its line
        line = int(code.group("line"))
        return (CheckAnnotation(where(code.group("file")), line, line, "failure", first_line, "The run failed here"),)
    if spec_file is None:
        return ()
    text = spec_file.read_text(errors="replace")
    lines = _toml_key_lines(text)
    found: list[int] = []
    syntax = _TOML_LINE_IN_ERROR.search(error)
    if syntax:
        found.append(int(syntax.group("line")))
    for match in _KEY_IN_ERROR.finditer(error):
        key = match.group("dotted") or ""
        if match.group("quoted"):  # a key the spec's check names ('split.test_fraction'), there or missing:
            key = match.group("quoted")
            while key and key not in lines:  # a missing key's line is its table's
                key = key.rpartition(".")[0]
        if key in lines:
            found.append(lines[key])
    data_path = _data_path(text)
    if data_path and Path(data_path).name in error and "data.path" in lines:  # the data file cannot be read
        found.append(lines["data.path"])
    if not found and _SPEC_FILE_IN_ERROR.search(error):  # the file as a whole is wrong
        found.append(1)
    return tuple(CheckAnnotation(where("mlops.toml"), line, line, "failure", first_line, "The run failed on this")
                 for line in dict.fromkeys(found))


def _toml_key_lines(text: str) -> dict[str, int]:
    """Each table and key of a TOML file (``data``, ``data.path``) and the line it is on."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if heading := _TOML_TABLE.match(line):
            table = heading.group("name")
            lines.setdefault(table, number)
        elif key := _TOML_KEY.match(line):
            lines.setdefault(f"{table}.{key.group('name')}" if table else key.group("name"), number)
    return lines


def _data_path(text: str) -> str:
    import tomllib

    try:
        data = tomllib.loads(text).get("data")
    except tomllib.TOMLDecodeError:
        return ""
    return str(data.get("path") or "") if isinstance(data, dict) else ""
