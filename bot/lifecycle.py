"""What follows what: the dispatcher that turns events into owed effects, and the effects themselves.

1. A change merged on the watched branch that touches the model project → one pipeline run for
   that commit; its result reported on the change (one comment, updated in place), as a commit
   status, on every ticket the change links, and in chat.
2. Drift found → one open retrain ticket per model, opened once, updated in place, commented on
   only when the drift changes materially (and not inside the cooldown).
3. A command → checked against the author's permission, acknowledged, done, answered.
4. A retrained model promoted for a retrain ticket → the ticket gets the new metrics and is closed.
5. A daily digest to chat.

Every outside write is an effect in the outbox, recorded in the same transaction as the event
that caused it, and carries a marker so a write whose outcome is unknown is found, not repeated.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot import messages
from bot.commands import Request, parse, required_permission, respond, unknown_reply
from bot.commands.base import CheckDrift, Promote, Rollback, RunPipeline, TellsTime
from bot import checklist
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
from bot.logs import log_context
from bot.fork_guard import code_under_test
from bot.outbox import Delivered, PermanentError
from bot.store import EffectRow, NewEffect, Store
from integrations.github_payloads import CheckClick
from integrations.github_projects import TicketBoard
from integrations.ports import (
    Chat,
    ChatAction,
    CheckAnnotation,
    CheckButton,
    CheckReport,
    Comment,
    EditsTicketBody,
    LinksChanges,
    MessageRef,
    NamesChangesForLinks,
    Permission,
    PipelineEngine,
    ReadsCommitStatuses,
    ReportsChangedPaths,
    ReportsCheckRuns,
    ReportsCommitMessages,
    ResolvesPermissions,
    ShowsActions,
    SourceControl,
    StillRunning,
    Target,
    Ticket,
    Tracker,
    UploadsFiles,
)

__all__ = ["Lifecycle", "SEVERITY_ORDER"]

log = logging.getLogger("mlops_bot.lifecycle")

_MEMORY_LIMIT = 10_000
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


class Lifecycle:
    """The rules (``effects_for``) and the effect handlers (``handlers``), over the ports."""

    def __init__(self, *, settings, store: Store, registry, scm: SourceControl, tracker: Tracker, chat: Chat,
                 engine: PipelineEngine, project: Project, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 observer=None, board: TicketBoard | None = None):
        self.settings, self.store, self.registry = settings, store, registry
        self.observer = observer  # told of each event seen (bot/observability.py), when given
        self.board = board  # where people track retrain tickets (a GitHub Project), when one is set
        self.scm, self.tracker, self.chat, self.engine = scm, tracker, chat, engine
        self.project, self.clock = project, clock
        # A change's runs are check runs where the source control can show them (GitHub, as an App),
        # commit statuses elsewhere: asked once, here.
        self.reports_check_runs = isinstance(scm, ReportsCheckRuns)
        self._memory: OrderedDict[tuple[str, str], dict] = OrderedDict()  # bounded: see _remember

    # --- dispatch ------------------------------------------------------------------------------

    def handle(self, event: Event, *, source: str = "", cursor: tuple[str, str] | None = None,
               known_new: bool = False) -> bool:
        """Record the event and every effect it causes, in one transaction; False if seen before.

        The early look (skipped when the caller already checked) spares the services the requests
        that working out the effects of an old event would cost; ``ingest`` dedupes in any case.
        """
        source = source or _source_of(event)
        if not known_new and self.store.seen(event.key):
            if cursor:
                self.store.set_cursor(*cursor)
            if self.observer is not None:
                self.observer.event(event, source, new=False)
            return False
        with log_context(event=event.key, run=event.run_id if isinstance(event, RunFinished) else None):
            effects = self.effects_for(event)
            new = self.store.ingest(event.key, event.kind, source, event.to_dict(), effects, cursor=cursor)
        if self.observer is not None:
            self.observer.event(event, source, new=new)
        return new

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

    # --- rule 1: a change merged ---------------------------------------------------------------

    def touches_project(self, paths: tuple[str, ...]) -> bool:
        prefixes = [prefix.strip("/") for prefix in self.project.repo_paths]
        if "" in prefixes:  # the project is the whole repository
            return bool(paths)
        return any(path == prefix or path.startswith(prefix + "/") for path in paths for prefix in prefixes)

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
        run_id = _run_id(f"{change.repo}:{change.commit}")
        tickets = self.scm.linked_tickets(change, tuple(self.settings.ticket_patterns))
        origin = {
            "kind": "change", "target": _target_dict(change.target), "repo": change.repo, "commit": change.commit,
            "change": change.number, "title": change.title, "url": change.url,
            "tickets": [list(t) for t in tickets], "episode": f"change:{change.repo}:{change.number}",
            "fixes": sorted({int(n) for n in _FIXES.findall(f"{change.title}\n{change.body}")}),
        }
        why = f"merge of {change.target} by {change.author}" if change.author else f"merge of {change.target}"
        return [
            self._run_started_on_commit(change.repo, change.commit, run_id, change.number, why),
            self._upsert(change.target, f"run:{run_id}", messages.run_started(self.project.name, run_id, why)),
            self._chat_episode(origin["episode"], CHANNEL_PIPELINE,
                               f"⏳ {self.project.name}: pipeline running for {change.target} “{change.title}”"),
            self._pipeline_run(run_id, trigger="merge", reason=why, origin=origin, promote=True),
            *links,
        ]

    # --- rule 3: commands ----------------------------------------------------------------------

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
            effects.append(self._reply(comment.target, f"unknown:{comment.id}", unknown_reply(parsed.unknown).text))
        permission = self._command_permission(comment, parsed.invocations)
        context = CommandView(self)
        for index, invocation in enumerate(parsed.invocations):
            request = Request(invocation=invocation, target=comment.target, author=comment.author,
                              model=self.project.name, permission=permission)
            reply = respond(request, context, overrides=self.settings.command_permissions)
            reply, code = code_under_test(self, comment, reply)  # a pull request's code; forks need /ok-to-test
            key = f"cmd:{event.source}:{comment.target.repo}:{comment.id}:{index}"
            effects.append(self._reply(comment.target, key, reply.text))
            origin = {
                "kind": "command", "target": _target_dict(comment.target), "comment": comment.id,
                "command": invocation.line, "author": comment.author, "repo": comment.target.repo,
                "episode": self._episode_for(comment.target),
            }
            origin.update(code)
            # An issue of the repository is one of the tracker's tickets only when the tracker keeps
            # them there: with Azure Boards, GitHub issue #11 is not work item 11.
            if comment.target.kind == "ticket" and (not self.scm.has_issues or self.tracker.tickets_in_repository):
                origin["ticket"] = comment.target.number
            for action in reply.actions:
                effects.extend(self._action_effects(action, key, origin))
        if parsed.dropped:
            effects.append(self._reply(comment.target, f"dropped:{comment.id}",
                                       f"I ran the first {self.settings.max_commands_per_comment} commands of that comment "
                                       f"and skipped {parsed.dropped}; put them in separate comments."))
        return effects

    def known_ticket(self, model: str) -> Ticket | None:
        """The model's open retrain ticket as the bot last saw it: no request to the tracker.

        Opening and closing go through the tracker itself (``find_open``), so this shortcut serves
        only answers and links, where a ticket closed by hand a moment ago does no harm.
        """
        state = self.store.get_state("episodes", model) or {}
        if not state.get("ticket_id"):
            return None
        return Ticket(id=int(state["ticket_id"]), key=_ticket_key(model), title=state.get("ticket_title", ""),
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

    def check_clicked(self, click: CheckClick, *, delivery: str = "") -> tuple[bool, str]:
        """A click on one of the bot's check runs, as the command it gives from the person who
        clicked: *Deploy vN* is ``/deploy N`` and *Re-run* (the run's, or the commit's suite's)
        ``/validate``, on the change the run is for. Each is then checked against that person's
        permission and answered on the change exactly as the typed command is.

        Once: a *Deploy* button deploys at most once, whoever clicks it and however often GitHub
        delivers the click (its event is the button's; a refused click is the clicker's own, so it
        does not use the button up); a re-run is one per delivery. A *Deploy* on a run that is no
        longer its change's latest deploys nothing and says so on the change.

        Returns (whether anything new was stored, what became of the click, in a few words: "ignored: ..."
        for a click on what is not the bot's).
        """
        if not self.reports_check_runs:
            return False, "ignored: the bot makes check runs only when it runs as a GitHub App"
        run_id = click.external_id or (self.store.get_state("check_commits", f"{click.repo}@{click.head_sha}")
                                       or {}).get("run_id", "")
        record = (self._remembered("check_runs", run_id) if run_id else None) or {}
        if click.action != "suite_rerequested" and (not record or click.name != CHECK_NAME):
            return False, "ignored: not a check run of this bot"
        change = record.get("change") or (click.pulls[0] if click.pulls else None)
        if change is None:
            return False, "ignored: the commit is on no change the bot knows"
        target = Target("change", click.repo, int(change))
        if click.action != "requested_action":
            comment = Comment(id=f"check-rerun:{delivery or click.check_run_id or click.head_sha}:{click.sender}",
                              target=target, author=click.sender, body="/validate", created_at=self.clock())
            return self._command_from_click(comment)
        if not click.identifier.startswith(DEPLOY_BUTTON) or not click.identifier[len(DEPLOY_BUTTON):].isdigit():
            return False, f"ignored: {click.identifier!r} is not one of the bot's buttons"
        version = int(click.identifier[len(DEPLOY_BUTTON):])
        latest = (self.store.get_state("change_checks", f"{click.repo}#{change}") or {}).get("run_id")
        if latest and latest != run_id:
            key = f"{CHECKS_SOURCE}:stale:{click.check_run_id}:{click.identifier}:{click.sender}"
            text = (f"@{click.sender}, that **Deploy v{version}** button is on run `{run_id}`, which is no longer the "
                    f"latest run for {target} (`{latest}` is), so nothing was deployed. Use the latest run's button, "
                    f"or type `/deploy {version}` here if v{version} is still the one you want.")
            new = self.store.ingest(key, "check_click_refused", CHECKS_SOURCE, {
                "repo": click.repo, "check_run": click.check_run_id, "run_id": run_id, "latest": latest,
                "by": click.sender, "button": click.identifier}, [self._reply(target, key, text)])
            return new, "refused: not the latest run"
        allowed = self.permission(target, click.sender) >= required_permission(
            "deploy", self.settings.command_permissions)
        button = f"check-button:{click.repo}:{click.check_run_id}:{click.identifier}"
        comment = Comment(id=button if allowed else f"{button}:{click.sender}", target=target, author=click.sender,
                          body=f"/deploy {version}", created_at=self.clock())
        return self._command_from_click(comment)

    def _command_from_click(self, comment: Comment) -> tuple[bool, str]:
        new = self.handle(CommandGiven(CHECKS_SOURCE, comment), source=CHECKS_SOURCE)
        return new, f"{comment.body.split()[0]} {'given' if new else 'seen before'}"

    def host_in_thread(self, target: Target, message: MessageRef) -> None:
        """Commands given at ``target`` (a button under ``message``) are answered in ``message``'s
        thread, which keeps its own text: their episode has no top-level message of its own."""
        self._remember("threads", self._episode_for(target), {**_ref_dict(message), "hosted": True})

    def _episode_for(self, target: Target) -> str:
        if target.kind == "ticket":
            return f"ticket:{target.number}"
        if target.kind == "chat":
            return f"chat:{target.repo}:{target.number}"
        return f"change:{target.repo}:{target.number}"

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
                    *self._board_effects(ticket.id if ticket else None, "retraining", _run_id(key))]
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

    # --- run finished: report where people look -------------------------------------------------

    def _on_run_finished(self, event: RunFinished) -> list[NewEffect]:
        result = event.result
        origin = result.get("origin") or {}
        report = messages.run_report(result)
        effects: list[NewEffect] = []
        target = _target(origin.get("target"))
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
        effects.append(self._chat_episode(episode, CHANNEL_PIPELINE, messages.run_chat_text(result, where),
                                          actions=_run_actions(result)))
        effects.append(self._chat_reply(episode, CHANNEL_PIPELINE, f"run-chat:{event.run_id}",
                                        f"Run `{event.run_id}`: {messages.run_chat_text(result, where)}"))
        ticket_id = origin.get("ticket")
        if ticket_id and result.get("version") is not None and not result.get("promoted") \
                and result.get("status") in {"succeeded", "not_promoted"} and not result.get("nothing_new"):
            # a validated candidate kept back (stage = "candidate", or a gate): a person decides, with /deploy
            effects += self._board_effects(ticket_id, "review", event.run_id, Version=result.get("version"))
            effects += self._checklist_refresh(int(ticket_id), f"run:{event.run_id}",
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
            effects.append(NewEffect(f"resolve:{ticket_id}:{event.run_id}", "episode.resolve", {
                "ticket_id": int(ticket_id), "model": result.get("model"), "version": result.get("version"),
                "run_id": event.run_id, "validation": result.get("validation"), "recent": result.get("recent"),
            }, lane=f"ticket:{result.get('model')}"))
        if result.get("promoted") and self.tracker.reference_prefix == "AB#":
            # "Fixes AB#12": the work item is done once the change's model is in production.
            for number in origin.get("fixes", []):
                effects.append(NewEffect(f"fixes:{event.run_id}:{number}", "tracker.close", {
                    "ticket_id": number, "model": result.get("model"), "version": result.get("version"),
                    "run_id": event.run_id}, lane=f"ticket:{number}"))
        return effects

    def _close_retrain_ticket(self, ticket_id: int, result: dict[str, Any], summary: str = "",
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
            *self._checklist_refresh(ticket_id, f"close:{run_id}", f"✅ resolved: {model} v{version} is in "
                                     "production and this ticket is closed.", final=True),
            NewEffect(f"close:{ticket_id}:{run_id}", "tracker.close",
                      {"ticket_id": ticket_id, "model": model, "version": version, "run_id": run_id},
                      lane=f"ticket:{model}"),
            self._chat_reply(episode, CHANNEL_ALERTS, f"close-chat:{ticket_id}",
                             f"✅ {model} v{version} is in production; ticket:{ticket_id} closed."),
            self._chat_episode(episode, CHANNEL_ALERTS, f"✅ {model}: {why} with v{version} · ticket:{ticket_id} closed"),
            *self._board_effects(ticket_id, "resolved", run_id, Version=version),
        ]

    def _nothing_new_effects(self, ticket_id: int, result: dict[str, Any]) -> list[NewEffect]:
        """A retrain that had nothing to learn from: said on the ticket and in chat; the ticket stays open."""
        model, run_id = result.get("model"), result.get("run_id")
        text = (f"⚠️ Not retrained: {result['nothing_new']}. This ticket stays open; `/deploy N` still promotes "
                "a version by hand.")
        return [
            NewEffect(f"nothing-new:{ticket_id}:{run_id}", "tracker.comment", {"ticket_id": ticket_id, "body": text},
                      lane=f"ticket:{model}"),
            self._chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"nothing-new-chat:{ticket_id}:{run_id}",
                             f"⚠️ {model}: {result['nothing_new']}; ticket:{ticket_id} stays open."),
        ]

    # --- rule 2: drift -------------------------------------------------------------------------

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
            self._chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"rows-missed-chat:{ticket_id}:{run_id}",
                             f"⚠️ {model}: run `{run_id}` trained without the {rows} labelled production rows; "
                             f"ticket:{ticket_id} stays open."),
        ]

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
        target = _target(origin.get("target"))
        if target is not None:  # asked for with /drift: answer there, whatever the verdict
            if event.data_problem:
                text = f"The latest batch could not be checked: {event.data_problem}"
            else:
                verdict = f"**{event.severity}** drift" if event.drifted else "no drift"
                text = f"Drift check of **{model}** v{event.version} on `{messages.batch_name(event.batch)}`: {verdict}.\n\n" + \
                    event.summary.get("markdown", "")
            effects.append(self._reply(target, f"drift-reply:{event.key}", text.strip()))
        return effects

    def _ticket_reasons(self, event: DriftFound) -> list[str]:
        """Why the finding owes a retrain ticket: drift at or above the least severity that counts, and/or a
        performance finding (measured on labels, or estimated where ``[monitor] estimated_trigger``)."""
        drift = event.drifted and SEVERITY_ORDER[event.severity] >= SEVERITY_ORDER[self.settings.drift_min_severity]
        performance = bool(((event.summary.get("performance") or {}).get("finding") or {}).get("problems"))
        return ["drift"] * drift + ["performance"] * performance

    # --- promotions, rollbacks, closed tickets --------------------------------------------------

    def _on_promoted(self, event: ModelPromoted) -> list[NewEffect]:
        return self._registry_change_effects(event, f"🚀 **{event.model} v{event.version}** is now in production"
                                             + (f" (was v{event.previous})." if event.previous else "."))

    def _on_rolled_back(self, event: ModelRolledBack) -> list[NewEffect]:
        return self._registry_change_effects(event, f"↩️ Rolled back **{event.model}** to v{event.version} "
                                             f"(v{event.previous} archived).")

    def _registry_change_effects(self, event, text: str) -> list[NewEffect]:
        origin = (self.store.effect(event.cause + (":promote" if event.kind == "model_promoted" else ":rollback"))
                  or None)
        effects = []
        target = _target(((origin.payload if origin else {}).get("origin") or {}).get("target"))
        if target is not None:
            effects.append(self._reply(target, f"result:{event.key}", text))
        buttons = [{"command": "rollback", "model": event.model, "version": event.version}] \
            if event.kind == "model_promoted" else []
        effects.append(NewEffect(f"chat:{event.key}", "chat.post", {"channel": CHANNEL_PIPELINE, "text": text,
                                                                   **({"actions": buttons} if buttons else {})},
                                 lane=f"chat:{CHANNEL_PIPELINE}"))
        ticket = self.known_ticket(event.model)
        if ticket is not None:  # the open ticket's boxes follow production (a deploy box gone, a rollback box)
            effects += self._checklist_refresh(ticket.id, event.key, text.replace("**", ""))
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
                                                                 "closed_at": _iso(self.clock())})
        return []

    # --- the live checklist in the retrain ticket (bot/checklist.py) ------------------------------
    #
    # The ticket's body holds a section the bot owns: the report, a status line and boxes that act
    # when ticked. A tick reaches the bot as an edit of the body (GitHub's ``issues`` edited webhook,
    # or the next poll of the body) and becomes the command the box stands for, given by the
    # editor, with the editor's permission. The section's revision is in the tick's event key, so
    # a box acts once per revision whoever reports it and however many people ticked it. The bot
    # writes its boxes unticked, so a ticked box in the body is always a person's.

    def checklist_ticks(self, ticket_id: int, body: str, *, editor: str, source: str) -> list[ChecklistTicked]:
        """The boxes ticked in ``body`` (the ticket's body as the tracker stores it), as events; none
        from the bot's own edits, nor from a section edited out of the bot's shape."""
        if not isinstance(self.tracker, EditsTicketBody) or self._is_bot(editor):
            return []
        reading = checklist.read(body, visible=not self.tracker.hides_comments)
        if not reading.intact:
            return []
        return [ChecklistTicked(source, self.tracker.name, int(ticket_id), action, int(reading.revision), editor)
                for action in reading.ticked]

    def ticket_body_edited(self, ticket_id: int, body: str, *, editor: str, source: str) -> int:
        """A person saved the body of a ticket (GitHub's ``issues`` edited webhook): each ticked box
        acts once; a section edited out of shape is rebuilt. Returns how many new events it made.

        ``source``: the service the edit came from; an edit of one of its issues is an edit of a
        ticket only when the tracker is that service (with Azure Boards, GitHub issue #11 is not
        work item 11)."""
        if not isinstance(self.tracker, EditsTicketBody) or self._is_bot(editor) or source != self.tracker.name:
            return 0
        ticks = self.checklist_ticks(ticket_id, body, editor=editor, source=source)
        if not ticks:
            return int(self._repair_checklist(ticket_id, body, source))
        return sum(self.handle(event, source=source) for event in ticks)

    def poll_checklist(self) -> int:
        """Read the open retrain ticket's body (one request) and act on the boxes ticked there.

        On GitHub the body does not say who edited it, and a box acts with its ticker's permission:
        with the ``issues`` webhook set up (GITHUB_WEBHOOK_SECRET), its delivery names the editor and
        the poll leaves ticks (and repairs) to it and reads nothing; without, a tick seen by the poll
        is unticked with a reply that says so (type the command instead). Azure Boards
        (``System.ChangedBy``) and the local board name the editor, and the poll acts on their ticks."""
        if not isinstance(self.tracker, EditsTicketBody):
            return 0
        if self.tracker.tickets_in_repository and self.settings.github_webhook_secret is not None:
            return 0  # the issues' edits come by webhook, each with its editor
        ticket = self.known_ticket(self.project.name)
        if ticket is None or not self._checklist_state(ticket.id):
            return 0
        current = self.tracker.body(ticket.id)
        if current is None or self._is_bot(current.editor):
            return 0
        ticks = self.checklist_ticks(ticket.id, current.text, editor=current.editor, source=self.tracker.name)
        if not ticks:
            return int(self._repair_checklist(ticket.id, current.text, self.tracker.name))
        return sum(self.handle(event, source=self.tracker.name) for event in ticks)

    def _on_checklist_ticked(self, event: ChecklistTicked) -> list[NewEffect]:
        model = self.project.name
        open_ticket = self.known_ticket(model)
        if event.tracker != self.tracker.name or open_ticket is None or open_ticket.id != event.ticket_id:
            return []  # not the open retrain ticket (closed since, or another tracker's number)
        command = checklist.command_for(event.action)
        if command is None:
            return []  # not an id the bot writes
        box = {box.action: box for box in self._checklist_boxes(model)}.get(event.action)
        ticket_id, label = event.ticket_id, box.label if box else event.action

        def answer(text: str, status: str) -> list[NewEffect]:
            return [NewEffect(f"checklist-reply:{event.key}", "tracker.comment", {"ticket_id": ticket_id, "body": text},
                              lane=f"ticket:{model}"),
                    *self._checklist_refresh(ticket_id, event.key, status)]

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
        reply = respond(request, CommandView(self), overrides=self.settings.command_permissions)
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

    def _checklist_boxes(self, model: str) -> tuple[checklist.Box, ...]:
        """What can be done now: retrain; deploy the newest validated candidate newer than
        production (with its primary metric against production's); roll back to the previous version."""
        view = CommandView(self)
        production = view.production(model)
        live = production["version"] if production else None
        waiting = [v for v in view.versions(model) if v.get("stage") == "candidate" and v.get("passed")
                   and (live is None or int(v["version"]) > live)]
        candidate = None
        if waiting:
            newest = max(waiting, key=lambda v: int(v["version"]))
            candidate = (int(newest["version"]), _validated_note(newest, production))
        return checklist.boxes(candidate=candidate, previous=view.previous_production(model))

    def _first_checklist(self, report: str, model: str) -> str:
        """A new ticket's body: the report inside the bot's section, revision 1, where the tracker
        edits bodies; the report alone elsewhere."""
        if not isinstance(self.tracker, EditsTicketBody):
            return report
        return checklist.render(report, _CHECKLIST_WAITING, self._checklist_boxes(model), 1,
                                visible=not self.tracker.hides_comments)

    def _write_checklist(self, ticket: Ticket | int, model: str, *, report: str | None = None,
                         status: str | None = None, final: bool = False) -> int:
        """Rewrite the bot's section of the ticket's body as a new revision (people's text kept);
        returns the revision. A ticket opened before the checklist existed is the bot's text alone,
        and is replaced whole by the section."""
        ticket_id = ticket if isinstance(ticket, int) else ticket.id
        tracker = self.tracker
        state = self._checklist_state(ticket_id) or {}
        report = state.get("report", "") if report is None else report
        status = status or state.get("status") or _CHECKLIST_WAITING
        revision = int(state.get("revision") or 0) + 1
        visible = not tracker.hides_comments
        offered = () if final else self._checklist_boxes(model)
        section = checklist.render(report, status, offered, revision, visible=visible)
        if not state:
            tracker.update(ticket if isinstance(ticket, Ticket) else tracker.get(ticket_id), body=section)
        else:
            current = tracker.body(ticket_id)
            if current is None:
                raise PermanentError(f"ticket:{ticket_id} is gone: its checklist cannot be written")
            tracker.set_body(ticket_id, checklist.splice(current.text, tracker.as_body(section), visible=visible))
        self._checklist_written(ticket_id, model, revision, report, status)
        return revision

    def _checklist_written(self, ticket_id: int, model: str, revision: int, report: str, status: str) -> None:
        self.store.put_state("checklists", str(ticket_id), {"model": model, "revision": revision, "report": report,
                                                           "status": status})

    def _checklist_state(self, ticket_id: int) -> dict | None:
        return self.store.get_state("checklists", str(ticket_id))

    def _checklist_refresh(self, ticket_id: int, cause: str, status: str, *, final: bool = False) -> list[NewEffect]:
        """The section rewritten (boxes unticked, recomputed) with ``status``, once per cause;
        ``final``: the episode is over, and no box is left."""
        if not isinstance(self.tracker, EditsTicketBody):
            return []
        return [NewEffect(f"checklist-refresh:{ticket_id}:{cause}", "checklist.refresh",
                          {"ticket_id": int(ticket_id), "model": self.project.name, "status": status,
                           **({"final": True} if final else {})}, lane=f"ticket:{self.project.name}")]

    def _repair_checklist(self, ticket_id: int, body: str, source: str) -> bool:
        """A section edited out of the bot's shape (a marker deleted or doubled, ...) is rebuilt from
        state, once per such body; people's text outside it stays (``checklist.splice``)."""
        if not self._checklist_state(ticket_id):
            return False
        reading = checklist.read(body, visible=not self.tracker.hides_comments)
        if reading.intact:
            return False
        key = f"checklist-repair:{self.tracker.name}:{ticket_id}:{hashlib.sha1(body.encode()).hexdigest()[:12]}"
        status = f"the checklist was rebuilt ({reading.problem}); text outside it is kept as written."
        return self.store.ingest(key, "checklist_repair", source, {"ticket_id": ticket_id, "problem": reading.problem},
                                 self._checklist_refresh(ticket_id, key, status))

    def _deliver_checklist(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        ticket = self.known_ticket(p["model"])
        if not isinstance(self.tracker, EditsTicketBody) or ticket is None or ticket.id != p["ticket_id"] \
                or not self._checklist_state(ticket.id):
            return Delivered({"written": False})  # the ticket was closed meanwhile: its last body stays
        return Delivered({"written": True, "revision": self._write_checklist(
            ticket.id, p["model"], status=p["status"], final=bool(p.get("final")))})

    def _is_bot(self, login: str) -> bool:
        name = self.settings.bot_name.lower()
        return bool(login) and login.lower() in {name, f"{name}[bot]"}

    # --- effect constructors --------------------------------------------------------------------

    def _reply(self, target: Target, key: str, body: str) -> NewEffect:
        if target.kind == "chat":  # a command typed in chat is answered in the thread of its first answer
            return self._chat_reply(self._episode_for(target), target.repo, key, messages.as_typed_in_chat(body))
        return NewEffect(key, "scm.reply", {"target": _target_dict(target), "body": body}, lane=f"scm:{target.key}")

    def _upsert(self, target: Target, marker: str, body: str) -> NewEffect:
        key = f"{marker}:{hashlib.sha1(body.encode()).hexdigest()[:10]}"
        if target.kind == "chat":
            return self._chat_reply(self._episode_for(target), target.repo, key, body)
        return NewEffect(key, "scm.upsert", {"target": _target_dict(target), "marker": marker, "body": body},
                         lane=f"scm:{target.key}")

    def _ab_links(self, target: Target, url: str, title: str, text: str, where: str) -> list[NewEffect]:
        """``AB#12`` in a change's title, description, commits or comments: work item 12 linked to the
        change (a Hyperlink, or an Azure Repos pull request's artifact link) with a comment, once per
        pair whichever text names it first (the effect's key)."""
        if not isinstance(self.tracker, LinksChanges):
            return []
        from integrations.local import find_ticket_references

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
            "context": STATUS_CONTEXT,
        }, lane=f"status:{repo}:{commit}")

    def _run_started_on_commit(self, repo: str, commit: str, run_id: str, change: int | None, why: str) -> NewEffect:
        """The commit's word that its run started: the check run in progress, or a pending status."""
        if not self.reports_check_runs:
            return self._status(repo, commit, "pending", f"{self.project.name}: pipeline running", run_id)
        report = CheckReport(status="in_progress", title=f"{self.project.name}: pipeline running",
                             summary=messages.run_started(self.project.name, run_id, why))
        # ``planned_at`` orders a change's runs: the newest started is the one whose buttons count.
        return self._check_run(repo, commit, run_id, change, report, planned_at=_iso(self.clock()))

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
            "repo": repo, "commit": commit, "run_id": run_id, "name": CHECK_NAME, "change": change,
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

    def _chat_episode(self, episode: str, channel: str, text: str, *, actions: list[dict] | None = None) -> NewEffect:
        """``actions``: buttons under the message (ChatAction fields), where the chat shows them."""
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        return NewEffect(f"episode:{episode}:{digest}", "chat.episode",
                         {"episode": episode, "channel": channel, "text": text,
                          **({"actions": actions} if actions else {})}, lane=f"chat:{episode}")

    def _chat_reply(self, episode: str, channel: str, key: str, text: str) -> NewEffect:
        return NewEffect(key, "chat.reply", {"episode": episode, "channel": channel, "text": text},
                         lane=f"chat:{episode}")

    def _pipeline_run(self, run_id: str, *, trigger: str, reason: str, origin: dict[str, Any], promote: bool) -> NewEffect:
        return NewEffect(f"pipeline:{run_id}", "pipeline.run", {
            "project": self.project.name, "run_id": run_id, "trigger": trigger, "reason": reason,
            "origin": origin, "promote": promote,
        }, lane=f"pipeline:{self.project.name}")

    def _board_effects(self, ticket_id: int | None, stage: str, cause: str, **fields: Any) -> list[NewEffect]:
        """The retrain ticket's card moved to ``stage`` on the board people track (when one is set),
        once per cause; ``fields`` (Model, Version, ...) filled where the board has them."""
        if self.board is None or not ticket_id:
            return []
        return [NewEffect(f"board:{ticket_id}:{stage}:{cause}", "board.follow", {
            "ticket_id": int(ticket_id), "stage": stage,
            "fields": {name: str(value) for name, value in fields.items() if value not in (None, "")},
        }, lane=f"board:{ticket_id}")]

    # --- where the bot's own posts are -----------------------------------------------------------

    def _remembered(self, namespace: str, key: str) -> dict | None:
        """A thread's or comment's id, kept in memory too: once written, these never change."""
        known = self._memory.get((namespace, key))
        if known is None:
            known = self.store.get_state(namespace, key)
            if known is not None:
                self._memory[(namespace, key)] = known
        return known

    def _remember(self, namespace: str, key: str, value: dict) -> None:
        self.store.put_state(namespace, key, value)
        self._memory[(namespace, key)] = value
        if len(self._memory) > _MEMORY_LIMIT:  # old episodes are rarely touched again; the store keeps them
            self._memory.popitem(last=False)

    # --- effect handlers ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {
            "scm.reply": _Handler(self._deliver_reply, self._find_reply),
            "scm.upsert": _Handler(self._deliver_upsert),
            "scm.react": _Handler(self._deliver_react),
            "scm.status": _Handler(self._deliver_status, self._find_status),
            "scm.check_run": _Handler(self._deliver_check_run),  # safe to repeat: it finds the run first
            "tracker.drift": _Handler(self._deliver_drift_ticket),
            "tracker.comment": _Handler(self._deliver_ticket_comment, self._find_ticket_comment),
            "tracker.close": _Handler(self._deliver_close),
            "tracker.link": _Handler(self._deliver_link),
            "chat.post": _Handler(self._deliver_chat_post, self._find_chat_post),
            "chat.episode": _Handler(self._deliver_chat_episode),
            "chat.reply": _Handler(self._deliver_chat_reply, self._find_chat_reply),
            "chat.upload": _Handler(self._deliver_chat_upload),
            "pipeline.run": _Handler(self._deliver_run, self._find_run),
            "registry.promote": _Handler(self._deliver_promote),
            "registry.rollback": _Handler(self._deliver_rollback),
            "drift.check": _Handler(self._deliver_drift_check),
            "episode.resolve": _Handler(self._deliver_resolution),
            "board.follow": _Handler(self._deliver_board),  # safe to repeat: it reads the card first
            "checklist.refresh": _Handler(self._deliver_checklist),  # safe to repeat: a new revision of the section
        }

    def _deliver_board(self, effect: EffectRow) -> Delivered:
        """Move the ticket's card to the effect's stage, unless a person's move is to be respected.

        The status the bot last set is kept per ticket, so a card in Done that a person put there is
        told apart from one the bot put there (``should_move``)."""
        p = effect.payload
        if self.board is None:
            raise PermanentError("no board is configured any more (MLOPS_GITHUB_PROJECT unset, or the tickets are no "
                                 "longer Azure Boards work items): the card stays as it is")
        card = self.store.get_state("board_cards", str(p["ticket_id"])) or {}
        moved = self.board.follow(int(p["ticket_id"]), p["stage"], last_set=card.get("status"), fields=p["fields"])
        if moved.moved or not moved.why:  # where the bot put it (now, or by an attempt whose answer was lost)
            self.store.put_state("board_cards", str(p["ticket_id"]), {"status": moved.status, "effect": effect.key})
        else:
            log.info("ticket #%s's card left in %s (%s)", p["ticket_id"], moved.status, moved.why)
        return Delivered({"status": moved.status, "moved": moved.moved, "why": moved.why})

    def _deliver_reply(self, effect: EffectRow) -> Delivered:
        target = _target(effect.payload["target"])
        return Delivered({"comment_id": self.scm.reply(target, effect.payload["body"], marker=effect.key)})

    def _find_reply(self, effect: EffectRow) -> Delivered | None:
        found = self.scm.find_reply(_target(effect.payload["target"]), effect.key)
        return Delivered({"comment_id": found}) if found else None

    def _deliver_upsert(self, effect: EffectRow) -> Delivered:
        # One comment per marker, edited in place: look it up first, so repeating is harmless.
        target, marker = _target(effect.payload["target"]), effect.payload["marker"]
        known = self._remembered("comments", f"{target.key}:{marker}")
        comment_id = (known or {}).get("id") or self.scm.find_reply(target, marker)
        if comment_id:
            self.scm.edit_reply(target, comment_id, effect.payload["body"], marker=marker)
        else:
            comment_id = self.scm.reply(target, effect.payload["body"], marker=marker)
        self._remember("comments", f"{target.key}:{marker}", {"id": comment_id})
        return Delivered({"comment_id": comment_id})

    def _deliver_react(self, effect: EffectRow) -> Delivered:
        data = effect.payload["comment"]
        comment = Comment(data["id"], _target(data["target"]), data["author"], "", self.clock())
        self.scm.react(comment, effect.payload["reaction"])
        return Delivered({})

    def _deliver_status(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        self.scm.set_status(p["repo"], p["commit"], state=p["state"], description=p["description"], context=p["context"])
        return Delivered({})

    def _find_status(self, effect: EffectRow) -> Delivered | None:
        """A status carries no marker: it is done when the commit's newest status of its context
        already says it (where the source control reads statuses back: ``ReadsCommitStatuses``)."""
        p = effect.payload
        if not isinstance(self.scm, ReadsCommitStatuses):
            return None
        return Delivered({}) if self.scm.status_of(p["repo"], p["commit"], p["context"]) == (
            p["state"], p["description"][:140]) else None

    def _deliver_check_run(self, effect: EffectRow) -> Delivered:
        """Show the run on its commit's check run: made once, found again by the commit, its name and
        the run's id (its ``external_id``), then updated. After a lost answer, it is looked for
        before anything is written, and the annotations it may hold already are not sent again."""
        p = effect.payload
        if not isinstance(self.scm, ReportsCheckRuns):
            raise PermanentError(f"the {self.scm.name} source control shows no check runs (a GitHub App's): "
                                 "the run is reported on the change only")
        report = _report_from_dict(p["report"])
        record = dict(self._remembered("check_runs", p["run_id"]) or {})
        check_run_id = record.get("check_run_id")
        if check_run_id is None or effect.outcome_unknown:
            found = self.scm.find_check_run(p["repo"], p["commit"], p["name"], p["run_id"])
            if found is not None:
                check_run_id = found.id
                if found.annotations:
                    report = replace(report, annotations=())
        if check_run_id is None:
            check_run_id = self.scm.create_check_run(p["repo"], p["commit"], p["name"], external_id=p["run_id"],
                                                     report=report).id
        else:
            self.scm.update_check_run(p["repo"], check_run_id, report)
        record.update({"repo": p["repo"], "commit": p["commit"], "change": p.get("change"), "check_run_id": check_run_id,
                       "planned_at": record.get("planned_at") or p.get("planned_at")})
        if p.get("version") is not None:
            record["version"] = p["version"]
        self._remember("check_runs", p["run_id"], record)
        self.store.put_state("check_commits", f"{p['repo']}@{p['commit']}", {"run_id": p["run_id"]})
        if p.get("change") is not None and p.get("planned_at"):
            latest = self.store.get_state("change_checks", f"{p['repo']}#{p['change']}") or {}
            if latest.get("planned_at", "") <= p["planned_at"]:  # a later run started after this one: it stays latest
                self.store.put_state("change_checks", f"{p['repo']}#{p['change']}",
                                     {"run_id": p["run_id"], "planned_at": p["planned_at"]})
        return Delivered({"check_run_id": check_run_id})

    def _deliver_drift_ticket(self, effect: EffectRow) -> Delivered:
        """Open the model's retrain ticket, or update the open one; never a second open ticket.

        Opening the ticket and owing the episode's chat (the alert, its thread reply, the chart)
        are one unit. The ticket carries this effect's key as its opener's marker, so a retry after
        a lost answer (``outcome_unknown``) finds the ticket it opened itself and carries on as if
        the answer had come: the chat owed once, no "Drift changed" comment. The chat is owed
        before the episode's state is written, so a retry that finds the state written by this
        effect (``finding``) has nothing left to do.

        The cooldown holds chat back, never the ticket: a finding inside it is written on the open
        ticket ("seen again ...; alerts held until ...") and kept in the state (``seen_again``, with
        ``until``) for ``/status`` and ``mlops-bot status``. With no open ticket (none yet, or the
        last one closed), the finding is a new episode: a new ticket, at once.

        The payload may name ``reasons`` besides drift (default ``["drift"]``) and carry measured
        ``performance``; the ticket shows both.
        """
        p = effect.payload
        model, key = p["model"], _ticket_key(p["model"])
        state = self.store.get_state("episodes", model) or {}
        if state.get("finding") == effect.key:  # an earlier attempt got as far as its state, written last
            return Delivered({"ticket_id": state.get("ticket_id"), "opened": state.get("opened_by") == effect.key})
        now = self.clock()
        checked_at = datetime.fromisoformat(p["checked_at"]) if p.get("checked_at") else now
        found = list(p.get("reasons") or ["drift"])  # this finding's reasons; the episode's accumulate
        drift_now = "drift" in found

        def ticket_text(reasons: list[str], episode: dict[str, Any], seen_again: dict[str, Any] | None = None):
            # A finding without drift (late labels) keeps the episode's drift report on the ticket.
            drift = p if drift_now else {"severity": episode.get("drift_severity") or p["severity"],
                                         "markdown": episode.get("markdown", ""),
                                         "report_dir": episode.get("report_dir", "")}
            title = messages.drift_ticket_title(model, drift["severity"], reasons)
            body = messages.drift_ticket_body(model, p["version"], drift["severity"], drift["markdown"],
                                              drift["report_dir"], checked_at, reasons=reasons,
                                              performance=p.get("performance"), seen_again=seen_again)
            return title, body, ("mlops-bot", "retrain", f"drift:{drift['severity']}")

        # After an unknown outcome, first the ticket this very effect may have opened.
        ticket = self.tracker.find_open(key, opened_by=effect.key) if effect.outcome_unknown else None
        opened = ticket is not None
        ticket = ticket or self.tracker.find_open(key)
        if ticket is None:  # a new episode, whatever the cooldown: a closed episode does not silence the next
            title, body, labels = ticket_text(found, {})
            ticket = self.tracker.open(key, title, self._first_checklist(body, model), labels, marker=effect.key)
            opened = True
        if opened and isinstance(self.tracker, EditsTicketBody) and not self._checklist_state(ticket.id):
            # the section's first revision, written by the opening itself
            self._checklist_written(ticket.id, model, 1, ticket_text(found, {})[1], _CHECKLIST_WAITING)
        reasons = found if opened else list(dict.fromkeys([*(state.get("reasons") or []), *found]))
        seen_again = None
        if opened:
            alerted = True
        else:
            material = (p["severity"] != state.get("severity") or bool(set(found) - set(state.get("reasons") or []))
                        or (drift_now and sorted(p["features"]) != sorted(state.get("features", []))))
            cooling = _within(state.get("alerted_at"), self.settings.drift_cooldown_s, now)
            alerted = material and (
                SEVERITY_ORDER[p["severity"]] > SEVERITY_ORDER.get(state.get("severity", "none"), 0) or not cooling)
            if not alerted:  # shown on the ticket, and while the cooldown lasts, as held
                earlier = state.get("seen_again") or {}
                seen_again = {"at": _iso(now), "batch": p["batch"], "severity": p["severity"],
                              "what": "drift" if drift_now else "performance drop",
                              "features": p["features"], "count": int(earlier.get("count") or 0) + 1}
                if cooling:
                    cooldown = timedelta(seconds=self.settings.drift_cooldown_s)
                    seen_again["until"] = _iso(datetime.fromisoformat(state["alerted_at"]) + cooldown)
            title, body, labels = ticket_text(reasons, state, seen_again)
            if isinstance(self.tracker, EditsTicketBody):  # the bot's section only: people's text stays
                ticket = self.tracker.update(ticket, title=title, labels=labels)
                self._write_checklist(ticket, model, report=body)
            else:
                ticket = self.tracker.update(ticket, title=title, body=body, labels=labels)
            if alerted:
                comment_marker = f"{effect.key}:comment"
                what = (f"Drift changed: now **{p['severity']}** in {', '.join(p['features']) or 'the data'}"
                        if drift_now else "Performance dropped: "
                        + ((p.get("performance") or {}).get("finding") or "see the table above"))
                if not self.tracker.find_comment(ticket.id, comment_marker):
                    self.tracker.comment(ticket.id, f"{what} (batch `{messages.batch_name(p['batch'])}`).", marker=comment_marker)
        if alerted:
            episode = f"ticket:{ticket.id}"
            text = messages.drift_chat_text(model, p["severity"], p["features"], messages.ticket_link(ticket.id, ticket.url),
                                            reasons)
            self.store.add_effects(effect.cause, [
                self._chat_episode(episode, CHANNEL_ALERTS, text, actions=[{"command": "retrain", "model": model}]),
                self._chat_reply(episode, CHANNEL_ALERTS, f"drift-chat:{effect.key}",
                                 f"Batch `{messages.batch_name(p['batch'])}`: {p['severity']} drift. Report: {p['report_dir'] or 'n/a'}"),
                NewEffect(f"drift-chart:{effect.key}", "chat.upload", {
                    "episode": episode, "channel": CHANNEL_ALERTS, "path": f"{p['report_dir']}/report.png",
                    "title": f"{model}: drift in batch {messages.batch_name(p['batch'])}",
                }, lane=f"chat:{episode}"),
            ])
        if opened:  # owed before the state below, as the chat is: a retry that finds the state owes nothing
            self.store.add_effects(effect.cause, self._board_effects(
                ticket.id, "opened", effect.key, Model=model, Severity=p["severity"], Reason=", ".join(found)))
        # An alert moves the episode's yardstick (what was last said); a held finding does not, so
        # that a change held back is still a change once the cooldown is over.
        said = p if alerted else state
        self.store.put_state("episodes", model, {
            **({"opened_by": effect.key, "opened_at": _iso(now)} if opened else state),
            "ticket_id": ticket.id, "ticket_title": ticket.title, "ticket_url": ticket.url,
            "severity": said.get("severity"), "features": said.get("features", []), "reasons": reasons,
            **({"drift_severity": p["severity"], "markdown": p["markdown"], "report_dir": p["report_dir"]}
               if drift_now else {key: state.get(key) for key in ("drift_severity", "markdown", "report_dir")}),
            "alerted_at": _iso(now) if alerted else state.get("alerted_at"), "batch": p["batch"],
            "version": p["version"], "seen_again": seen_again, "finding": effect.key,
        })
        self.store.link("model", f"{model}:v{p['version']}", "drift_ticket", "ticket", str(ticket.id))
        return Delivered({"ticket_id": ticket.id, "opened": opened})

    def _deliver_ticket_comment(self, effect: EffectRow) -> Delivered:
        return Delivered({"comment_id": self.tracker.comment(int(effect.payload["ticket_id"]), effect.payload["body"],
                                                             marker=effect.key)})

    def _find_ticket_comment(self, effect: EffectRow) -> Delivered | None:
        found = self.tracker.find_comment(int(effect.payload["ticket_id"]), effect.key)
        return Delivered({"comment_id": found}) if found else None

    def _deliver_link(self, effect: EffectRow) -> Delivered:
        # Safe to repeat: the tracker looks for the link before making it.
        p, target = effect.payload, _target(effect.payload["target"])
        if not isinstance(self.tracker, LinksChanges):
            raise PermanentError(f"the {self.tracker.name} tracker links no changes")
        if isinstance(self.scm, NamesChangesForLinks) and target.repo == self.scm.repo:
            url = self.scm.link_url(target)  # a change of ours, linked as the source names it
        else:
            url = p["url"]
        outcome = self.tracker.link(int(p["ticket_id"]), url, p["body"], marker=effect.key, title=p.get("title", ""))
        if outcome != "missing":
            self.store.link("ticket", str(p["ticket_id"]), "linked_to", "change", f"{target.repo}:{target.number}")
        return Delivered({"outcome": outcome, "url": url})

    def _deliver_close(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        self.tracker.close(int(p["ticket_id"]))
        state = self.store.get_state("episodes", p["model"]) or {}
        if state.get("ticket_id") == int(p["ticket_id"]):
            self.store.put_state("episodes", p["model"], {**state, "ticket_id": None, "closed_at": _iso(self.clock())})
        if state.get("ticket_id") in (int(p["ticket_id"]), None):
            # The next episode starts afresh, also when the close was seen first (a board moving the
            # work item to its closed state sends a service hook before this effect runs).
            self.store.put_state("episode_batches", p["model"], {"batches": []})
        self.store.link("ticket", str(p["ticket_id"]), "closed_by", "model", f"{p['model']}:v{p['version']}")
        return Delivered({})

    def _deliver_chat_post(self, effect: EffectRow) -> Delivered:
        ref = self.chat.post(effect.payload["channel"], effect.payload["text"], marker=effect.key,
                             **self._actions(effect.payload))
        return Delivered(_ref_dict(ref))

    def _actions(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The effect's buttons as ``actions=`` for a chat that shows them; nothing for one that does not."""
        if not payload.get("actions") or not isinstance(self.chat, ShowsActions):
            return {}
        return {"actions": tuple(ChatAction(**action) for action in payload["actions"])}

    def _find_chat_post(self, effect: EffectRow) -> Delivered | None:
        ref = self.chat.find_message(effect.payload["channel"], effect.key)
        return Delivered(_ref_dict(ref)) if ref else None

    def _thread(self, episode: str, channel: str) -> MessageRef | None:
        known = self._remembered("threads", episode)
        if known:
            return MessageRef(known["channel"], known["id"])
        return self.chat.find_message(channel, f"episode:{episode}")

    def _deliver_chat_episode(self, effect: EffectRow) -> Delivered:
        """The episode's one top-level message: posted once, then updated in place."""
        p = effect.payload
        parent = self._thread(p["episode"], p["channel"])
        if parent is not None and (self._remembered("threads", p["episode"]) or {}).get("hosted"):
            return Delivered({**_ref_dict(parent), "hosted": True})  # a button's: its news are replies there
        if parent is None:
            parent = self.chat.post(p["channel"], p["text"], marker=f"episode:{p['episode']}", **self._actions(p))
        else:
            self.chat.update(parent, p["text"], **self._actions(p))
        self._remember("threads", p["episode"], _ref_dict(parent))
        self.store.link("episode", p["episode"], "chat_thread", "chat", f"{parent.channel}/{parent.id}")
        return Delivered(_ref_dict(parent))

    def _deliver_chat_reply(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        parent = self._thread(p["episode"], p["channel"])
        if parent is None:
            parent = self.chat.post(p["channel"], p["text"], marker=f"episode:{p['episode']}")
            self._remember("threads", p["episode"], _ref_dict(parent))
            return Delivered(_ref_dict(parent))
        return Delivered(_ref_dict(self.chat.reply(parent, p["text"], marker=effect.key)))

    def _deliver_chat_upload(self, effect: EffectRow) -> Delivered:
        """The drift chart in the alert's thread, where the chat can show files (the console cannot)."""
        p = effect.payload
        parent = self._thread(p["episode"], p["channel"])
        if parent is None or not isinstance(self.chat, UploadsFiles) or not Path(p["path"]).is_file():
            return Delivered({"uploaded": False})
        self.chat.upload(parent, p["path"], p["title"])  # the adapter skips a file already in the thread
        return Delivered({"uploaded": True})

    def _find_chat_reply(self, effect: EffectRow) -> Delivered | None:
        parent = self._thread(effect.payload["episode"], effect.payload["channel"])
        if parent is None:
            return None
        ref = self.chat.find_message(parent.channel, effect.key, thread=parent.id)
        return Delivered(_ref_dict(ref)) if ref else None

    def _deliver_run(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        context = {"origin": p["origin"], "trigger": p["trigger"],
                   # /retrain (or a Retrain button) must learn something: same data and code is no retrain.
                   "require_new_data": p["trigger"] == "command" and p["promote"]}
        reports = self._episode_drift_reports(p["project"], p["origin"])
        if reports:  # the registry keeps them with the run (MLflow: its artifacts), beside what they caused
            context["drift_reports"] = reports
        try:
            handle = self.engine.start(p["project"], run_id=p["run_id"], trigger=p["trigger"], reason=p["reason"],
                                       context=context, promote=p["promote"])
        except KeyError as exc:
            raise PermanentError(str(exc)) from None
        return self._run_outcome(effect, handle)

    def _episode_drift_reports(self, model: str, origin: dict[str, Any]) -> list[str]:
        """The drift report folders of the episode's batches, oldest first, for a retrain tied to a ticket.

        Each batch's report is where bot/monitor.py writes it (``data_dir/reports/<model>/<batch>``);
        a batch that fed the episode through late labels only may have none, and is left out.
        """
        if not origin.get("ticket"):
            return []
        from bot.monitor import report_folder

        episode = self.store.get_state("episode_batches", model) or {}
        folders = (report_folder(self.settings, model, entry["batch"]) for entry in episode.get("batches", []))
        return [str(folder) for folder in dict.fromkeys(folders) if folder.is_dir()]

    def _find_run(self, effect: EffectRow) -> Delivered | None:
        handle = self.engine.status(effect.payload["run_id"])
        if handle is None or handle.status in {"queued", "running"}:
            return None  # never started, or killed part-way: run it (again) under the same id
        return self._run_outcome(effect, handle)

    def _run_outcome(self, effect: EffectRow, handle) -> Delivered:
        if handle.status in {"queued", "running"}:
            raise StillRunning(f"run {handle.run_id} still {handle.status}", retry_after=30)
        result = {**handle.result, "origin": effect.payload["origin"]}
        result["model"] = result.get("model") or effect.payload["project"]  # a remote engine may not know it
        self._link_run(result, effect.payload["origin"])
        event = RunFinished(run_id=handle.run_id, model=result.get("model", effect.payload["project"]),
                            status=handle.status, result=result)
        return Delivered({"status": handle.status, "version": result.get("version")}, events=(event,))

    def _link_run(self, result: dict[str, Any], origin: dict[str, Any]) -> None:
        run = ("run", result["run_id"])
        if result.get("version") is not None:
            model = f"{result['model']}:v{result['version']}"
            self.store.link("model", model, "produced_by", *run)
            metadata = self.registry.get(result["model"], result["version"]).metadata
            if (metadata.get("data") or {}).get("fingerprint"):
                self.store.link("model", model, "trained_on", "data", metadata["data"]["fingerprint"])
            for source in (metadata.get("data") or {}).get("sources") or []:
                if source.get("kind") in {"batch", "labels"}:  # what production taught this version
                    self.store.link("model", model, "learned_from", source["kind"], source["path"])
            code = metadata.get("code_version") or {}
            if code.get("commit") and not origin.get("commit"):
                self.store.link(*run, "built_from", "commit", f"{origin.get('repo') or self.scm.repo}@{code['commit']}"
                                + (" (dirty)" if code.get("dirty") else ""))
        if origin.get("commit"):
            self.store.link(*run, "built_from", "commit", f"{origin['repo']}@{origin['commit']}")
        if origin.get("kind") == "change":
            self.store.link(*run, "triggered_by", "change", origin["episode"].removeprefix("change:"))
        if origin.get("kind") == "command":
            self.store.link(*run, "triggered_by", "command", f"{origin['repo']}:{origin['comment']}")
            target = origin["target"]
            self.store.link("command", f"{origin['repo']}:{origin['comment']}", "typed_on",
                            target["kind"], f"{target['repo']}:{target['number']}" if target["kind"] == "change"
                            else str(target["number"]))
        if origin.get("ticket"):
            self.store.link(*run, "for_ticket", "ticket", str(origin["ticket"]))
        for _name, number in origin.get("tickets", []):
            self.store.link("change", origin["episode"].removeprefix("change:"), "links", "ticket", str(number))
        thread = self._remembered("threads", origin.get("episode", ""))
        if thread:
            self.store.link(*run, "chat_thread", "chat", f"{thread['channel']}/{thread['id']}")

    def _deliver_promote(self, effect: EffectRow) -> Delivered:
        from pipeline.registry_port import RegistryError

        p = effect.payload
        before = self.registry.production(p["model"])
        try:
            promoted = self.registry.promote(p["model"], p["version"], reason=p["reason"], trigger="command")
        except RegistryError as exc:
            raise PermanentError(str(exc)) from None
        previous = before.version if before and before.version != promoted.version else None
        event = ModelPromoted(model=p["model"], version=promoted.version, previous=previous, reason=p["reason"],
                              cause=p["cause"])
        self.store.link("model", f"{p['model']}:v{promoted.version}", "promoted_by", "command", p["cause"])
        return Delivered({"version": promoted.version}, events=(event,))

    def _deliver_rollback(self, effect: EffectRow) -> Delivered:
        from pipeline.registry_port import RegistryError

        p = effect.payload
        current = self.registry.production(p["model"])
        if (effect.outcome_unknown and current is not None and p.get("from_version") is not None
                and current.version != p["from_version"]):
            # Already rolled back by an earlier attempt whose answer was lost: do not roll back twice.
            # (On a first attempt a newer promotion is no rollback: roll back from it, as asked.)
            restored, previous = current, p["from_version"]
        else:
            try:
                restored = self.registry.rollback(p["model"], reason=p["reason"], trigger="command")
            except RegistryError as exc:
                raise PermanentError(str(exc)) from None
            previous = current.version if current else 0
        event = ModelRolledBack(model=p["model"], version=restored.version, previous=previous, reason=p["reason"],
                                cause=p["cause"])
        return Delivered({"version": restored.version}, events=(event,))

    def _deliver_drift_check(self, effect: EffectRow) -> Delivered:
        from bot.monitor import check_latest

        event = check_latest(self, effect.payload["model"], cause=effect.payload["cause"],
                             origin=effect.payload["origin"])
        return Delivered({"batch": event.batch if event else None}, events=(event,) if event else ())


    def _deliver_resolution(self, effect: EffectRow) -> Delivered:
        """Measure whether the promoted retrain resolved the episode; close the ticket only if it did.

        Safe to repeat: it only reads, and the effects it owes are keyed by the run.
        """
        from bot.resolution import judge_resolution, recheck_batches
        from pipeline.spec import load_project

        p = effect.payload
        model, version, ticket_id = p["model"], int(p["version"]), int(p["ticket_id"])
        spec = load_project(self.project.path)
        episode = self.store.get_state("episode_batches", model) or {}
        batches = [Path(entry["path"]) for entry in episode.get("batches", [])]
        drift_persists, checked = recheck_batches(self.registry.get(model, version).path, batches,
                                                  drift_settings=spec.drift, model_name=model)
        resolution = judge_resolution(
            drift_persists=drift_persists, checked_batches=checked, recent=p.get("recent"),
            validated=(p.get("validation") or {}).get("metrics") or {}, primary=spec.metrics.primary,
            maximize=str(spec.metrics.primary_direction) == "maximize", max_drop=spec.performance_max_drop,
            limits={name: limit.model_dump() for name, limit in spec.gates.limits.items()},
        )
        summary = resolution.summary(model, version)
        result = {"model": model, "version": version, "run_id": p["run_id"], "validation": p.get("validation"),
                  "recent": p.get("recent")}
        if resolution.resolved:
            why = "drift gone" if resolution.drift_gone else "performance on recent data restored"
            self.store.add_effects(effect.cause, self._close_retrain_ticket(ticket_id, result, summary, why))
        else:
            self.store.add_effects(effect.cause, [
                NewEffect(f"unresolved:{ticket_id}:{p['run_id']}", "tracker.comment", {
                    "ticket_id": ticket_id,
                    "body": f"🔁 {summary}. This ticket stays open.\n\n{messages.recent_table(p.get('recent'))}".strip(),
                }, lane=f"ticket:{model}"),
                self._chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"unresolved-chat:{ticket_id}:{p['run_id']}",
                                 f"🔁 {summary}; ticket:{ticket_id} stays open."),
            ])
        return Delivered({"resolved": resolution.resolved, "summary": summary})


class _Handler:
    def __init__(self, deliver: Callable[[EffectRow], Delivered],
                 find_done: Callable[[EffectRow], Delivered | None] | None = None):
        self._deliver, self._find_done = deliver, find_done

    def deliver(self, effect: EffectRow) -> Delivered:
        return self._deliver(effect)

    def find_done(self, effect: EffectRow) -> Delivered | None:
        return self._find_done(effect) if self._find_done else None


class CommandView(TellsTime):
    """The read-only view of state that command handlers see (a ``CommandContext``)."""

    def __init__(self, lifecycle: Lifecycle):
        self._lifecycle = lifecycle

    def now(self) -> datetime:
        return self._lifecycle.clock()

    def production(self, model: str) -> dict | None:
        version = self._lifecycle.registry.production(model)
        return _version_summary(version) if version else None

    def versions(self, model: str) -> list[dict]:
        return [_version_summary(v) for v in self._lifecycle.registry.versions(model)]

    def previous_production(self, model: str) -> int | None:
        history = self._lifecycle.registry.history(model)
        # Production periods form a stack; the one under the current is what a rollback restores.
        stack: list[int] = []
        for period in history:
            if period.started_by == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(period.version)
        return stack[-2] if len(stack) >= 2 else None

    def open_ticket(self, model: str):
        return self._lifecycle.known_ticket(model)

    def drift_episode(self, model: str) -> dict | None:
        """The retrain episode's state: its ticket, what was last alerted, a finding held back (``seen_again``)."""
        return self._lifecycle.store.get_state("episodes", model)

    def recent_runs(self, model: str, limit: int = 5) -> list[dict]:
        return [{"run_id": r.run_id, "status": r.status, "version": r.version, "trigger": r.trigger,
                 "started_at": r.started_at.isoformat()} for r in self._lifecycle.registry.runs(model, limit=limit)]

    def last_drift(self, model: str) -> dict | None:
        return self._lifecycle.store.get_state("last_drift", model)

    def performance(self, model: str) -> dict | None:
        return self._lifecycle.store.get_state("performance", model)


def _version_summary(version) -> dict[str, Any]:
    metadata = version.metadata
    return {
        "version": version.version, "stage": str(version.stage), "metrics": metadata.get("metrics", {}),
        "passed": bool((metadata.get("validation") or {}).get("passed")),
        "primary_metric": (metadata.get("primary_metric") or {}).get("name"),
        "created_at": version.created_at.isoformat(), "run_id": version.run_id,
    }


def _ticket_key(model: str) -> str:
    return f"retrain:{model}"


# The checklist's status line until something is done from it.
_CHECKLIST_WAITING = ("waiting for a decision. Tick a box to act, as if you typed its command here (with your "
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


def _source_of(event: Event) -> str:
    """The service an event was read from (``github``, ``slack``...); empty for the bot's own."""
    return event.source if isinstance(event, (CommandGiven, ChangeMerged, TicketClosed)) else ""


def _reference_name(tracker: Tracker) -> str:
    """What ``find_ticket_references`` calls a reference to one of the tracker's tickets: ``azure``
    for ``AB#12``, ``local`` for ``#12``."""
    return "azure" if tracker.reference_prefix == "AB#" else "local"


def _target_dict(target: Target) -> dict[str, Any]:
    return {"kind": target.kind, "repo": target.repo, "number": target.number}


def _target(data: dict[str, Any] | None) -> Target | None:
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


def _ref_dict(ref: MessageRef) -> dict[str, Any]:
    return {"channel": ref.channel, "id": ref.id, "thread": ref.thread}


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


def _report_from_dict(data: dict[str, Any]) -> CheckReport:
    return CheckReport(status=data["status"], conclusion=data.get("conclusion"), title=data["title"],
                       summary=data["summary"], details_url=data.get("details_url") or "",
                       annotations=tuple(CheckAnnotation(**a) for a in data.get("annotations") or []),
                       buttons=tuple(CheckButton(**b) for b in data.get("buttons") or []))


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


def _within(iso: str | None, seconds: float, now: datetime) -> bool:
    return bool(iso) and now - datetime.fromisoformat(iso) < timedelta(seconds=seconds)


def _iso(moment: datetime) -> str:
    return moment.isoformat()

