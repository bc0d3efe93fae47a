"""The effect handlers: each kind of effect the planner owes, carried out once (deliver), and found
done after a write whose answer was lost (find-done), for the outbox (bot/outbox.py).

Every outside write carries the effect's key as its marker, so a write whose outcome is unknown is
found, not repeated. A few effects owe more once done (the chat of a newly opened ticket, the close
of a resolved episode): the planner words those, and they are added to the outbox here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot import checklist, messages
from bot.events import DriftFound, ModelPromoted, ModelRolledBack, RunFinished
from bot.outbox import Delivered, PermanentError
from bot.planner import (
    CHANNEL_ALERTS,
    CHECKLIST_WAITING,
    SEVERITY_ORDER,
    Planner,
    Project,
    target_from,
    ticket_key,
)
from bot.store import EffectRow, NewEffect, Store
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
    PipelineEngine,
    ReadsCommitStatuses,
    ReportsCheckRuns,
    ShowsActions,
    SourceControl,
    StillRunning,
    Ticket,
    TicketBoard,
    Tracker,
    UploadsFiles,
)

__all__ = ["EffectHandlers", "PostsMemory", "ref_dict"]

log = logging.getLogger("mlops_bot.lifecycle")

_MEMORY_LIMIT = 10_000


class PostsMemory:
    """Where the bot's own posts are (a thread's, a comment's, a check run's id), read from the store
    once and kept in memory too: once written, these never change."""

    def __init__(self, store: Store):
        self.store = store
        self._memory: OrderedDict[tuple[str, str], dict] = OrderedDict()  # bounded: see keep

    def recall(self, namespace: str, key: str) -> dict | None:
        known = self._memory.get((namespace, key))
        if known is None:
            known = self.store.get_state(namespace, key)
            if known is not None:
                self._memory[(namespace, key)] = known
        return known

    def keep(self, namespace: str, key: str, value: dict) -> None:
        self.store.put_state(namespace, key, value)
        self._memory[(namespace, key)] = value
        if len(self._memory) > _MEMORY_LIMIT:  # old episodes are rarely touched again; the store keeps them
            self._memory.popitem(last=False)


class EffectHandlers:
    """``handlers()``: each effect kind's deliver and find-done, over the ports."""

    def __init__(self, *, settings, store: Store, registry, scm: SourceControl, tracker: Tracker, chat: Chat,
                 engine: PipelineEngine, project: Project, clock: Callable[[], datetime], board: TicketBoard | None,
                 planner: Planner, memory: PostsMemory,
                 check_drift: Callable[..., DriftFound | None]):
        self.settings, self.store, self.registry = settings, store, registry
        self.scm, self.tracker, self.chat, self.engine = scm, tracker, chat, engine
        self.project, self.clock = project, clock
        self.board = board  # where people track retrain tickets (a GitHub Project), when one is set
        self.planner = planner  # words the effects a delivery owes next
        self.memory = memory
        self.check_drift = check_drift  # bot/monitor.py's check of the latest batch: (model, *, cause, origin)

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

    # --- the board, the change: cards, comments, reactions, statuses, check runs ----------------------------

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
        why = moved.why
        if moved.moved or not why:  # where the bot put it (now, or by an attempt whose answer was lost)
            self.store.put_state("board_cards", str(p["ticket_id"]), {"status": moved.status, "effect": effect.key})
        else:
            person = card.get("moved_by_person") or {}  # who, when the project's webhook said so
            if person and (person.get("status") or "").casefold() == (moved.status or "").casefold():
                why = f"{person['by']} moved it to {moved.status}"
            log.info("ticket #%s's card left in %s (%s)", p["ticket_id"], moved.status, why)
        return Delivered({"status": moved.status, "moved": moved.moved, "why": why})

    def _deliver_reply(self, effect: EffectRow) -> Delivered:
        target = target_from(effect.payload["target"])
        return Delivered({"comment_id": self.scm.reply(target, effect.payload["body"], marker=effect.key)})

    def _find_reply(self, effect: EffectRow) -> Delivered | None:
        found = self.scm.find_reply(target_from(effect.payload["target"]), effect.key)
        return Delivered({"comment_id": found}) if found else None

    def _deliver_upsert(self, effect: EffectRow) -> Delivered:
        # One comment per marker, edited in place: look it up first, so repeating is harmless.
        target, marker = target_from(effect.payload["target"]), effect.payload["marker"]
        known = self.memory.recall("comments", f"{target.key}:{marker}")
        comment_id = (known or {}).get("id") or self.scm.find_reply(target, marker)
        if comment_id:
            self.scm.edit_reply(target, comment_id, effect.payload["body"], marker=marker)
        else:
            comment_id = self.scm.reply(target, effect.payload["body"], marker=marker)
        self.memory.keep("comments", f"{target.key}:{marker}", {"id": comment_id})
        return Delivered({"comment_id": comment_id})

    def _deliver_react(self, effect: EffectRow) -> Delivered:
        data = effect.payload["comment"]
        comment = Comment(data["id"], target_from(data["target"]), data["author"], "", self.clock())
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
        record = dict(self.memory.recall("check_runs", p["run_id"]) or {})
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
        self.memory.keep("check_runs", p["run_id"], record)
        # The commit's and the change's latest run are each project's own, where a change runs several.
        self.store.put_state("check_commits", self.project.scoped(f"{p['repo']}@{p['commit']}"), {"run_id": p["run_id"]})
        if p.get("change") is not None and p.get("planned_at"):
            change = self.project.scoped(f"{p['repo']}#{p['change']}")
            latest = self.store.get_state("change_checks", change) or {}
            if latest.get("planned_at", "") <= p["planned_at"]:  # a later run started after this one: it stays latest
                self.store.put_state("change_checks", change, {"run_id": p["run_id"], "planned_at": p["planned_at"]})
        return Delivered({"check_run_id": check_run_id})

    # --- the tracker: the retrain ticket, its checklist, comments, links, the close -------------------------

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
        model, key = p["model"], ticket_key(p["model"])
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
            # Beside other projects of the repository, a label names the model, so a board filters by it.
            named = (f"model:{model}",) if self.project.shared else ()
            return title, body, ("mlops-bot", "retrain", f"drift:{drift['severity']}", *named)

        # After an unknown outcome, first the ticket this very effect may have opened.
        ticket = self.tracker.find_open(key, opened_by=effect.key) if effect.outcome_unknown else None
        opened = ticket is not None
        ticket = ticket or self.tracker.find_open(key)
        if ticket is None:  # a new episode, whatever the cooldown: a closed episode does not silence the next
            title, body, labels = ticket_text(found, {})
            ticket = self.tracker.open(key, title, self._first_checklist(body, model), labels, marker=effect.key)
            opened = True
        if opened and isinstance(self.tracker, EditsTicketBody) and not self.planner.checklist_state(ticket.id):
            # the section's first revision, written by the opening itself
            self._checklist_written(ticket.id, model, 1, ticket_text(found, {})[1], CHECKLIST_WAITING)
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
                seen_again = {"at": now.isoformat(), "batch": p["batch"], "severity": p["severity"],
                              "what": "drift" if drift_now else "performance drop",
                              "features": p["features"], "count": int(earlier.get("count") or 0) + 1}
                if cooling:
                    cooldown = timedelta(seconds=self.settings.drift_cooldown_s)
                    seen_again["until"] = (datetime.fromisoformat(state["alerted_at"]) + cooldown).isoformat()
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
                self.planner.chat_episode(episode, CHANNEL_ALERTS, text, actions=[{"command": "retrain", "model": model}]),
                self.planner.chat_reply(episode, CHANNEL_ALERTS, f"drift-chat:{effect.key}",
                                 f"Batch `{messages.batch_name(p['batch'])}`: {p['severity']} drift. Report: {p['report_dir'] or 'n/a'}"),
                NewEffect(f"drift-chart:{effect.key}", "chat.upload", {
                    "episode": episode, "channel": CHANNEL_ALERTS, "path": f"{p['report_dir']}/report.png",
                    "title": f"{model}: drift in batch {messages.batch_name(p['batch'])}",
                }, lane=f"chat:{episode}"),
            ])
        if opened:  # owed before the state below, as the chat is: a retry that finds the state owes nothing
            self.store.add_effects(effect.cause, self.planner.board_effects(
                ticket.id, "opened", effect.key, Model=model, Severity=p["severity"], Reason=", ".join(found)))
        # An alert moves the episode's yardstick (what was last said); a held finding does not, so
        # that a change held back is still a change once the cooldown is over.
        said = p if alerted else state
        self.store.put_state("episodes", model, {
            **({"opened_by": effect.key, "opened_at": now.isoformat()} if opened else state),
            "ticket_id": ticket.id, "ticket_title": ticket.title, "ticket_url": ticket.url,
            "severity": said.get("severity"), "features": said.get("features", []), "reasons": reasons,
            **({"drift_severity": p["severity"], "markdown": p["markdown"], "report_dir": p["report_dir"]}
               if drift_now else {key: state.get(key) for key in ("drift_severity", "markdown", "report_dir")}),
            "alerted_at": now.isoformat() if alerted else state.get("alerted_at"), "batch": p["batch"],
            "version": p["version"], "seen_again": seen_again, "finding": effect.key,
        })
        self.store.link("model", f"{model}:v{p['version']}", "drift_ticket", "ticket", str(ticket.id))
        return Delivered({"ticket_id": ticket.id, "opened": opened})

    def _first_checklist(self, report: str, model: str) -> str:
        """A new ticket's body: the report inside the bot's section, revision 1, where the tracker
        edits bodies; the report alone elsewhere."""
        if not isinstance(self.tracker, EditsTicketBody):
            return report
        return checklist.render(report, CHECKLIST_WAITING, self.planner.checklist_boxes(model), 1,
                                visible=not self.tracker.hides_comments)

    def _write_checklist(self, ticket: Ticket | int, model: str, *, report: str | None = None,
                         status: str | None = None, final: bool = False) -> int:
        """Rewrite the bot's section of the ticket's body as a new revision (people's text kept);
        returns the revision. A ticket opened before the checklist existed is the bot's text alone,
        and is replaced whole by the section."""
        ticket_id = ticket if isinstance(ticket, int) else ticket.id
        tracker = self.tracker
        state = self.planner.checklist_state(ticket_id) or {}
        report = state.get("report", "") if report is None else report
        status = status or state.get("status") or CHECKLIST_WAITING
        revision = int(state.get("revision") or 0) + 1
        visible = not tracker.hides_comments
        offered = () if final else self.planner.checklist_boxes(model)
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

    def _deliver_checklist(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        ticket = self.planner.known_ticket(p["model"])
        if not isinstance(self.tracker, EditsTicketBody) or ticket is None or ticket.id != p["ticket_id"] \
                or not self.planner.checklist_state(ticket.id):
            return Delivered({"written": False})  # the ticket was closed meanwhile: its last body stays
        return Delivered({"written": True, "revision": self._write_checklist(
            ticket.id, p["model"], status=p["status"], final=bool(p.get("final")))})

    def _deliver_ticket_comment(self, effect: EffectRow) -> Delivered:
        return Delivered({"comment_id": self.tracker.comment(int(effect.payload["ticket_id"]), effect.payload["body"],
                                                             marker=effect.key)})

    def _find_ticket_comment(self, effect: EffectRow) -> Delivered | None:
        found = self.tracker.find_comment(int(effect.payload["ticket_id"]), effect.key)
        return Delivered({"comment_id": found}) if found else None

    def _deliver_link(self, effect: EffectRow) -> Delivered:
        # Safe to repeat: the tracker looks for the link before making it.
        p, target = effect.payload, target_from(effect.payload["target"])
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
            self.store.put_state("episodes", p["model"], {**state, "ticket_id": None, "closed_at": self.clock().isoformat()})
        if state.get("ticket_id") in (int(p["ticket_id"]), None):
            # The next episode starts afresh, also when the close was seen first (a board moving the
            # work item to its closed state sends a service hook before this effect runs).
            self.store.put_state("episode_batches", p["model"], {"batches": []})
        self.store.link("ticket", str(p["ticket_id"]), "closed_by", "model", f"{p['model']}:v{p['version']}")
        return Delivered({})

    # --- chat: posts, the episode's message and its thread, uploads -----------------------------------------

    def _deliver_chat_post(self, effect: EffectRow) -> Delivered:
        ref = self.chat.post(effect.payload["channel"], effect.payload["text"], marker=effect.key,
                             **self._actions(effect.payload))
        return Delivered(ref_dict(ref))

    def _actions(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The effect's buttons as ``actions=`` for a chat that shows them; nothing for one that does not."""
        if not payload.get("actions") or not isinstance(self.chat, ShowsActions):
            return {}
        return {"actions": tuple(ChatAction(**action) for action in payload["actions"])}

    def _find_chat_post(self, effect: EffectRow) -> Delivered | None:
        ref = self.chat.find_message(effect.payload["channel"], effect.key)
        return Delivered(ref_dict(ref)) if ref else None

    def _thread(self, episode: str, channel: str) -> MessageRef | None:
        known = self.memory.recall("threads", episode)
        if known:
            return MessageRef(known["channel"], known["id"])
        return self.chat.find_message(channel, f"episode:{episode}")

    def _deliver_chat_episode(self, effect: EffectRow) -> Delivered:
        """The episode's one top-level message: posted once, then updated in place."""
        p = effect.payload
        parent = self._thread(p["episode"], p["channel"])
        if parent is not None and (self.memory.recall("threads", p["episode"]) or {}).get("hosted"):
            return Delivered({**ref_dict(parent), "hosted": True})  # a button's: its news are replies there
        if parent is None:
            parent = self.chat.post(p["channel"], p["text"], marker=f"episode:{p['episode']}", **self._actions(p))
        else:
            self.chat.update(parent, p["text"], **self._actions(p))
        self.memory.keep("threads", p["episode"], ref_dict(parent))
        self.store.link("episode", p["episode"], "chat_thread", "chat", f"{parent.channel}/{parent.id}")
        return Delivered(ref_dict(parent))

    def _deliver_chat_reply(self, effect: EffectRow) -> Delivered:
        p = effect.payload
        parent = self._thread(p["episode"], p["channel"])
        if parent is None:
            parent = self.chat.post(p["channel"], p["text"], marker=f"episode:{p['episode']}")
            self.memory.keep("threads", p["episode"], ref_dict(parent))
            return Delivered(ref_dict(parent))
        return Delivered(ref_dict(self.chat.reply(parent, p["text"], marker=effect.key)))

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
        return Delivered(ref_dict(ref)) if ref else None

    # --- pipeline runs and what they made -------------------------------------------------------------------

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
        thread = self.memory.recall("threads", origin.get("episode", ""))
        if thread:
            self.store.link(*run, "chat_thread", "chat", f"{thread['channel']}/{thread['id']}")

    # --- the registry, the drift check, the episode's resolution --------------------------------------------

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
        event = self.check_drift(effect.payload["model"], cause=effect.payload["cause"],
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
            self.store.add_effects(effect.cause, self.planner.close_retrain_ticket(ticket_id, result, summary, why))
        else:
            self.store.add_effects(effect.cause, [
                NewEffect(f"unresolved:{ticket_id}:{p['run_id']}", "tracker.comment", {
                    "ticket_id": ticket_id,
                    "body": f"🔁 {summary}. This ticket stays open.\n\n{messages.recent_table(p.get('recent'))}".strip(),
                }, lane=f"ticket:{model}"),
                self.planner.chat_reply(f"ticket:{ticket_id}", CHANNEL_ALERTS, f"unresolved-chat:{ticket_id}:{p['run_id']}",
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


def ref_dict(ref: MessageRef) -> dict[str, Any]:
    return {"channel": ref.channel, "id": ref.id, "thread": ref.thread}


def _report_from_dict(data: dict[str, Any]) -> CheckReport:
    return CheckReport(status=data["status"], conclusion=data.get("conclusion"), title=data["title"],
                       summary=data["summary"], details_url=data.get("details_url") or "",
                       annotations=tuple(CheckAnnotation(**a) for a in data.get("annotations") or []),
                       buttons=tuple(CheckButton(**b) for b in data.get("buttons") or []))


def _within(iso: str | None, seconds: float, now: datetime) -> bool:
    return bool(iso) and now - datetime.fromisoformat(iso) < timedelta(seconds=seconds)
