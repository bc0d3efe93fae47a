"""What follows what: the planner (bot/planner.py, events → effects) and the effect handlers
(bot/delivery.py, each effect carried out once) wired over the ports, with the entry points that
turn what the services report (a check run's click, a ticket's edited body) into events.

Every outside write is an effect in the outbox, recorded in the same transaction as the event
that caused it (``handle``), and carries a marker so a write whose outcome is unknown is found,
not repeated.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bot import checklist
from bot.commands import required_permission
from bot.commands.base import TellsTime
from bot.delivery import EffectHandlers, PostsMemory, ref_dict
from bot.events import ChangeMerged, ChecklistTicked, CommandGiven, DriftFound, Event, RunFinished, TicketClosed
from bot.logs import log_context
from bot.planner import CHECKS_SOURCE, DEPLOY_BUTTON, Planner, Project
from bot.store import NewEffect, Store, WorkFence
from integrations.github_payloads import CardEdit, CheckClick
from integrations.ports import (
    Chat,
    Comment,
    EditsTicketBody,
    MessageRef,
    PermanentError,
    Permission,
    PipelineEngine,
    ReadsBoardItems,
    SourceControl,
    Target,
    Ticket,
    TicketBoard,
    Tracker,
)

__all__ = ["CommandView", "Lifecycle"]

log = logging.getLogger("mlops_bot.lifecycle")

class Lifecycle:
    """The planner and the effect handlers over the same ports and state; ``handle`` records an
    event with the effects it owes, ``handlers`` are what the outbox delivers them with."""

    def __init__(self, *, settings, store: Store, registry, scm: SourceControl, tracker: Tracker, chat: Chat,
                 engine: PipelineEngine, project: Project, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 observer=None, board: TicketBoard | None = None):
        self.settings, self.store, self.registry = settings, store, registry
        self.observer = observer  # told of each event seen (bot/observability.py), when given
        self.board = board  # where people track retrain tickets (a GitHub Project), when one is set
        self.scm, self.tracker, self.chat, self.engine = scm, tracker, chat, engine
        self.project, self.clock = project, clock
        self.memory = PostsMemory(store)
        self.planner = Planner(settings=settings, store=store, registry=registry, scm=scm, tracker=tracker, chat=chat,
                               engine=engine, project=project, clock=clock, view=CommandView(self),
                               has_board=board is not None)
        self.delivery = EffectHandlers(settings=settings, store=store, registry=registry, scm=scm, tracker=tracker,
                                       chat=chat, engine=engine, project=project, clock=clock, board=board,
                                       planner=self.planner, memory=self.memory, check_drift=self._check_drift)
        self.reports_check_runs = self.planner.reports_check_runs

    # --- dispatch ------------------------------------------------------------------------------

    def handle(self, event: Event, *, source: str = "", cursor: tuple[str, str] | None = None,
               known_new: bool = False, fence: WorkFence | None = None) -> bool:
        """Record the event and every effect it causes, in one transaction; False if seen before.

        The early look (skipped when the caller already checked) spares the services the requests
        that working out the effects of an old event would cost; ``ingest`` dedupes in any case.
        ``fence``: the poller's lease, which the event and the cursor are stored under (``LostLease``).
        """
        source = source or _source_of(event)
        if not known_new and self.seen_before(event, source=source, cursor=cursor, fence=fence):
            return False
        with log_context(event=event.key, run=event.run_id if isinstance(event, RunFinished) else None):
            return self.record(event, self.effects_for(event), source=source, cursor=cursor, fence=fence)

    def seen_before(self, event: Event, *, source: str = "", cursor: tuple[str, str] | None = None,
                    fence: WorkFence | None = None) -> bool:
        """Whether the event is stored already; if so, the cursor moves past it and it is counted as seen."""
        if not self.store.seen(event.key):
            return False
        if cursor:
            self.store.set_cursor(*cursor, fence=fence)
        if self.observer is not None:
            self.observer.event(event, source or _source_of(event), new=False)
        return True

    def effects_for(self, event: Event) -> list[NewEffect]:
        """What the event owes this project; each effect names the project where several share the
        deployment, so that its handlers deliver it (bot/routing.py)."""
        return self.stamped(self.planner.effects_for(event))

    def stamped(self, effects: list[NewEffect]) -> list[NewEffect]:
        if not self.project.shared:
            return effects
        name = self.project.name
        return [effect if effect.payload.get("project") == name else
                replace(effect, payload={**effect.payload, "project": name}) for effect in effects]

    def record(self, event: Event, effects: list[NewEffect], *, source: str = "",
               cursor: tuple[str, str] | None = None, fence: WorkFence | None = None) -> bool:
        """Store the event with ``effects`` in one transaction (once: False if it was stored before)."""
        source = source or _source_of(event)
        new = self.store.ingest(event.key, event.kind, source, event.to_dict(), effects, cursor=cursor, fence=fence)
        if self.observer is not None:
            self.observer.event(event, source, new=new)
        return new

    def handlers(self) -> dict[str, Any]:
        return self.delivery.handlers()

    def known_ticket(self, model: str) -> Ticket | None:
        return self.planner.known_ticket(model)

    def permission(self, target: Target, author: str) -> Permission:
        return self.planner.permission(target, author)

    def _check_drift(self, model: str, *, cause: str, origin: dict[str, Any]) -> DriftFound | None:
        from bot.monitor import check_latest

        return check_latest(self, model, cause=cause, origin=origin)

    # --- a click on a check run, a thread hosting a button's commands ----------------------------

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
        run_id = click.external_id or self.commit_check_run(click.repo, click.head_sha)
        record = (self.memory.recall("check_runs", run_id) if run_id else None) or {}
        if click.action != "suite_rerequested" and (not record or click.name != self.project.check_name):
            return False, "ignored: not a check run of this bot"
        change = record.get("change") or (click.pulls[0] if click.pulls else None)
        if change is None:
            return False, "ignored: the commit is on no change the bot knows"
        target = Target("change", click.repo, int(change))
        if click.action != "requested_action":
            rerun = f"check-rerun:{delivery or click.check_run_id or click.head_sha}:{click.sender}"
            comment = Comment(id=self.project.scoped(rerun),
                              target=target, author=click.sender, body="/validate", created_at=self.clock())
            return self._command_from_click(comment)
        if not click.identifier.startswith(DEPLOY_BUTTON) or not click.identifier[len(DEPLOY_BUTTON):].isdigit():
            return False, f"ignored: {click.identifier!r} is not one of the bot's buttons"
        version = int(click.identifier[len(DEPLOY_BUTTON):])
        latest = (self.store.get_state("change_checks", self.project.scoped(f"{click.repo}#{change}")) or {}).get("run_id")
        if latest and latest != run_id:
            key = f"{CHECKS_SOURCE}:stale:{click.check_run_id}:{click.identifier}:{click.sender}"
            text = (f"@{click.sender}, that **Deploy v{version}** button is on run `{run_id}`, which is no longer the "
                    f"latest run for {target} (`{latest}` is), so nothing was deployed. Use the latest run's button, "
                    f"or type `/deploy {version}` here if v{version} is still the one you want.")
            new = self.store.ingest(key, "check_click_refused", CHECKS_SOURCE, {
                "repo": click.repo, "check_run": click.check_run_id, "run_id": run_id, "latest": latest,
                "by": click.sender, "button": click.identifier}, self.stamped([self.planner.reply(target, key, text)]))
            return new, "refused: not the latest run"
        allowed = self.permission(target, click.sender) >= required_permission(
            "deploy", self.settings.command_permissions)
        button = f"check-button:{click.repo}:{click.check_run_id}:{click.identifier}"
        comment = Comment(id=button if allowed else f"{button}:{click.sender}", target=target, author=click.sender,
                          body=f"/deploy {version}", created_at=self.clock())
        return self._command_from_click(comment)

    def commit_check_run(self, repo: str, commit: str) -> str:
        """The run id of this project's latest check run on the commit; "" when it has none."""
        return (self.store.get_state("check_commits", self.project.scoped(f"{repo}@{commit}")) or {}).get("run_id", "")

    def _command_from_click(self, comment: Comment) -> tuple[bool, str]:
        new = self.handle(CommandGiven(CHECKS_SOURCE, comment), source=CHECKS_SOURCE)
        return new, f"{comment.body.split()[0]} {'given' if new else 'seen before'}"

    def host_in_thread(self, target: Target, message: MessageRef) -> None:
        """Commands given at ``target`` (a button under ``message``) are answered in ``message``'s
        thread, which keeps its own text: their episode has no top-level message of its own."""
        self.memory.keep("threads", self.planner.episode_for(target), {**ref_dict(message), "hosted": True})

    # --- a person's move of a card on the board -------------------------------------------------

    def card_edited(self, edit: CardEdit, *, delivery: str = "") -> tuple[bool, str]:
        """A card of a retrain ticket edited on the project (GitHub's ``projects_v2_item`` edited).

        The bot never fights a person's move: its own transitions read the card first and leave one
        a person moved to Done where it is (``should_move``). What the delivery adds is who moved it
        and where, read back from the card (the delivery names only the field): kept with the card's
        state, so the bot's next transition says whose move it respected, and ``mlops-bot board show``
        shows it. Once per delivery (or per item and field when GitHub sends no delivery id).

        Returns (whether the move was recorded, what became of the delivery in a few words).
        """
        if not isinstance(self.board, ReadsBoardItems):
            return False, "ignored: the tickets are not on a GitHub project (MLOPS_GITHUB_PROJECT)"
        if edit.by_bot or self._is_bot(edit.sender):
            return False, "ignored: the bot's own move"
        if edit.content_type != "Issue":
            return False, f"ignored: a {edit.content_type or 'card'} card is not a ticket"
        try:
            layout = self.board.layout()
        except PermanentError as exc:  # refused, or set up other than the settings say: doctor names the fix
            log.warning("a card edit on the project could not be read: %s", exc)
            return False, f"ignored: the project cannot be read ({exc})"
        if edit.project_id != layout.id:
            return False, "ignored: a card of another project"
        if edit.field_id and edit.field_id != layout.status.id:
            return False, "ignored: a field other than Status"
        key = f"github:card:{edit.item_id}:{delivery or edit.field_id}"
        if self.store.seen(key):
            return False, "seen before"
        try:
            item = self.board.item(edit.item_id)
        except PermanentError as exc:
            log.warning("the card %s could not be read: %s", edit.item_id, exc)
            return False, f"ignored: the card cannot be read ({exc})"
        known = self.store.get_state("board_cards", str(item.ticket_id)) if item else None
        if item is None or known is None:
            return False, "ignored: not a retrain ticket's card"
        moved = {"by": edit.sender, "status": item.status, "at": self.clock().isoformat()}
        # Before the event: a crash in between leaves the delivery to be handled again, which writes the same.
        self.store.put_state("board_cards", str(item.ticket_id), {**known, "moved_by_person": moved})
        new = self.store.ingest(key, "card_moved", "github", {"ticket_id": item.ticket_id, **moved})
        return new, f"{edit.sender} moved ticket #{item.ticket_id}'s card to {item.status or 'no Status'}"

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
        if ticket is None or not self.planner.checklist_state(ticket.id):
            return 0
        current = self.tracker.body(ticket.id)
        if current is None or self._is_bot(current.editor):
            return 0
        ticks = self.checklist_ticks(ticket.id, current.text, editor=current.editor, source=self.tracker.name)
        if not ticks:
            return int(self._repair_checklist(ticket.id, current.text, self.tracker.name))
        return sum(self.handle(event, source=self.tracker.name) for event in ticks)

    def _repair_checklist(self, ticket_id: int, body: str, source: str) -> bool:
        """A section edited out of the bot's shape (a marker deleted or doubled, ...) is rebuilt from
        state, once per such body; people's text outside it stays (``checklist.splice``)."""
        if not self.planner.checklist_state(ticket_id):
            return False
        reading = checklist.read(body, visible=not self.tracker.hides_comments)
        if reading.intact:
            return False
        key = f"checklist-repair:{self.tracker.name}:{ticket_id}:{hashlib.sha1(body.encode()).hexdigest()[:12]}"
        status = f"the checklist was rebuilt ({reading.problem}); text outside it is kept as written."
        return self.store.ingest(key, "checklist_repair", source, {"ticket_id": ticket_id, "problem": reading.problem},
                                 self.stamped(self.planner.checklist_refresh(ticket_id, key, status)))

    def _is_bot(self, login: str) -> bool:
        name = self.settings.bot_name.lower()
        return bool(login) and login.lower() in {name, f"{name}[bot]"}


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


def _source_of(event: Event) -> str:
    """The service an event was read from (``github``, ``slack``...); empty for the bot's own."""
    return event.source if isinstance(event, (CommandGiven, ChangeMerged, TicketClosed)) else ""
