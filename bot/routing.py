"""One deployment, several model projects: each event goes to the projects it concerns.

Every model project has its own ``Lifecycle`` (its planner and effect handlers, over ports the
projects share). ``ProjectRouter`` stands where one lifecycle stood for the callers that record
events (polls, webhooks, the outbox) and for the outbox's handlers:

- an event that names its model (a run finished, drift found, a promotion) goes to that project;
- a merged change, a closed ticket and a ticked checklist box go to every project, whose planner
  takes what is its own (the paths the change touches, its own retrain ticket); their effects are
  merged by key and recorded with the event once;
- a command goes to one project: the one its first argument names (``/retrain churn``), else the
  project whose retrain ticket it is typed on, else the one project the change's merge ran for;
  where that leaves several, the bot asks which, listing them.

Each effect is stamped with its project (``payload["project"]``) and delivered by that project's
handlers. With one project the router passes everything straight through, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from bot.commands import REGISTRY, parse
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
from bot.lifecycle import Lifecycle
from bot.projects import FoundProject, RepositoryProjects
from bot.store import EffectRow, NewEffect, Store, WorkFence
from integrations.github_payloads import CardEdit, CheckClick
from integrations.ports import (
    PermanentError,
    ReportsChangedPaths,
    Target,
    TransientError,
)
from pipeline.spec import SPEC_FILENAME

__all__ = ["ProjectRouter", "UnknownProject"]

log = logging.getLogger("mlops_bot.routing")

_NAMED_MODEL = (RunFinished, DriftFound, ModelPromoted, ModelRolledBack, ProductionRemoved)
_EVERY_PROJECT = (ChangeMerged, TicketClosed, ChecklistTicked)


class UnknownProject(LookupError):
    """A project name that none of the deployment's projects has."""


class ProjectRouter:
    """``search``: the repository's projects as found now (bot/projects.py), where the bot serves
    every project of its repository; ``make`` the lifecycle of a found project (``shared``: beside
    others). With both, a merge that adds, removes or changes an ``mlops.toml`` is followed."""

    def __init__(self, lifecycles: Sequence[Lifecycle], store: Store, *,
                 search: Callable[[], tuple[Path, RepositoryProjects] | None] | None = None,
                 make: Callable[[FoundProject, bool], Lifecycle] | None = None):
        if not lifecycles:
            raise ValueError("a deployment serves at least one model project")
        self.lifecycles = {lifecycle.project.name: lifecycle for lifecycle in lifecycles}
        self.store = store
        self._search, self._make = search, make

    @property
    def first(self) -> Lifecycle:
        return next(iter(self.lifecycles.values()))

    @property
    def single(self) -> Lifecycle | None:
        """The one project's lifecycle when there is one project, else None."""
        return self.first if len(self.lifecycles) == 1 else None

    def named(self, name: str) -> Lifecycle:
        """The project called ``name`` (case-insensitive)."""
        for project, lifecycle in self.lifecycles.items():
            if project.lower() == name.lower():
                return lifecycle
        raise UnknownProject(f"no model project named {name!r} here; the projects are: {', '.join(self.lifecycles)}")

    # --- events -----------------------------------------------------------------------------------------

    def handle(self, event: Event, *, source: str = "", cursor: tuple[str, str] | None = None,
               known_new: bool = False, fence: WorkFence | None = None) -> bool:
        """As ``Lifecycle.handle``: the event and the effects it owes, recorded once; False if seen before."""
        if isinstance(event, ChangeMerged) and self._search is not None and not self.store.seen(event.key):
            event = self._with_paths(event)
            if any(PurePosixPath(path).name == SPEC_FILENAME for path in event.change.paths):
                self._follow_projects(event)
        single = self.single
        if single is not None:
            return single.handle(event, source=source, cursor=cursor, known_new=known_new, fence=fence)
        if isinstance(event, _NAMED_MODEL) and event.model in self.lifecycles:
            return self.lifecycles[event.model].handle(event, source=source, cursor=cursor, known_new=known_new,
                                                       fence=fence)
        first = self.first
        if not known_new and first.seen_before(event, source=source, cursor=cursor, fence=fence):
            return False
        if isinstance(event, CommandGiven):
            chosen = self._command_project(event)
            if isinstance(chosen, NewEffect):  # the bot asks which project
                return first.record(event, [chosen], source=source, cursor=cursor, fence=fence)
            return chosen.handle(event, source=source, cursor=cursor, known_new=True, fence=fence)
        if isinstance(event, ChangeMerged):
            event = self._with_paths(event)
        if isinstance(event, _EVERY_PROJECT):
            effects: dict[str, NewEffect] = {}
            for lifecycle in self.lifecycles.values():
                for effect in lifecycle.effects_for(event):
                    effects.setdefault(effect.key, effect)
            if isinstance(event, ChangeMerged):
                self._remember_change(event)
            return first.record(event, list(effects.values()), source=source, cursor=cursor, fence=fence)
        log.warning("event %s names no project served here (%s): recorded without effects", event.key,
                    ", ".join(self.lifecycles))
        return first.record(event, [], source=source, cursor=cursor, fence=fence)

    def _with_paths(self, event: ChangeMerged) -> ChangeMerged:
        """A webhook's pull request carries no file list: asked for once here, not by every project
        (a TransientError leaves the event unstored, and the poller brings the merge again later)."""
        change, scm = event.change, self.first.scm
        if change.paths or not isinstance(scm, ReportsChangedPaths):
            return event
        return replace(event, change=replace(change, paths=tuple(scm.change_paths(change.repo, change.number))))

    def _follow_projects(self, event: ChangeMerged) -> None:
        """A merge touched an ``mlops.toml``: the projects are looked for again, a new one served
        from this merge on (its own merge runs it), one removed no longer. A project whose
        ``mlops.toml`` this merge made invalid is not served, and the change is told why (once)."""
        found = self._search() if self._search is not None and self._make is not None else None
        if found is None:
            return
        _root, repository = found
        shared = len(repository.projects) > 1
        if repository.projects:
            kept = {}
            for project in repository.projects:
                current = self.lifecycles.get(project.name)
                same = current is not None and current.project.shared == shared \
                    and current.project.path == project.spec.root
                kept[project.name] = current if same else self._make(project, shared)
            added, removed = kept.keys() - self.lifecycles.keys(), self.lifecycles.keys() - kept.keys()
            if added or removed:
                log.info("model projects after %s: %s (added: %s; removed: %s)", event.key, ", ".join(kept),
                         ", ".join(sorted(added)) or "none", ", ".join(sorted(removed)) or "none")
            self.lifecycles = kept
        touched = [problem for problem in repository.problems
                   if any(path == problem.repo_path or path.startswith(f"{problem.repo_path}/") or not problem.repo_path
                          for path in event.change.paths)]
        if touched:
            planner = self.first.planner
            replies = [planner.reply(event.change.target, f"project-problem:{event.key}:{problem.repo_path}",
                                     f"⚠️ This merge leaves a model project unserved: {problem.reason}")
                       for problem in touched]
            self.store.ingest(f"project-problems:{event.key}", "project_problems", "bot",
                              {"change": event.key, "problems": [problem.reason for problem in touched]},
                              self.first.stamped(replies))

    def _remember_change(self, event: ChangeMerged) -> None:
        """Which projects a change's merge ran for: a command typed on it later without a project's
        name goes to the one, or the bot asks which of them. A change merges once: one write."""
        touched = [name for name, lifecycle in self.lifecycles.items()
                   if lifecycle.planner.touches_project(event.change.paths)]
        if touched:
            self.store.put_state("change_projects", f"{event.change.repo}#{event.change.number}",
                                 {"projects": touched})

    def _command_project(self, event: CommandGiven) -> Lifecycle | NewEffect:
        """The project a command is for, or the question that asks which."""
        comment = event.comment
        invocations = parse(comment.body).invocations
        if not invocations or comment.by_bot or comment.edited:
            return self.first  # no command to route: any planner links what it names
        if not any(REGISTRY[invocation.name].about_a_project for invocation in invocations):
            return self.first  # /help, /ok-to-test: the same whichever project answers
        named = list(dict.fromkeys(lifecycle for lifecycle in map(self._named_by, invocations) if lifecycle))
        if len(named) == 1:
            return named[0]
        target = comment.target
        if len(named) > 1:  # one comment, one project: its answers and runs are that project's
            names = ", ".join(f"`{lifecycle.project.name}`" for lifecycle in named)
            text = (f"@{comment.author}, that comment names several model projects ({names}); nothing was done. "
                    "Give each project's commands in a comment of their own.")
            return self.first.stamped([self.first.planner.reply(target, f"which-project:{event.key}", text)])[0]
        candidates = list(self.lifecycles)
        if target.kind == "ticket":
            owners = [name for name, lifecycle in self.lifecycles.items()
                      if (ticket := lifecycle.known_ticket(name)) is not None and ticket.id == target.number]
            candidates = owners or candidates
        elif target.kind == "change":
            candidates = self._change_projects(target) or candidates
        if len(candidates) == 1:
            return self.lifecycles[candidates[0]]
        lifecycle = self.first
        names = ", ".join(f"`{name}`" for name in candidates)
        example = f"/{invocations[0].name} {candidates[0]}"
        where = "this change touches" if target.kind == "change" else "I look after"
        text = (f"@{comment.author}, {where} several model projects: {names}. Name the one you mean after the "
                f"command, e.g. `{example}`.")
        return lifecycle.stamped([lifecycle.planner.reply(target, f"which-project:{event.key}", text)])[0]

    def _named_by(self, invocation) -> Lifecycle | None:
        """The project a command's first argument names (``/retrain churn``), if any."""
        first = invocation.args.strip().partition(" ")[0]
        try:
            return self.named(first) if first else None
        except UnknownProject:
            return None

    def _change_projects(self, target: Target) -> list[str]:
        known = (self.store.get_state("change_projects", f"{target.repo}#{target.number}") or {}).get("projects")
        if known:
            return [name for name in known if name in self.lifecycles]
        scm = self.first.scm
        if not isinstance(scm, ReportsChangedPaths):
            return []
        try:
            paths = tuple(scm.change_paths(target.repo, target.number))
        except TransientError:
            return []  # the question lists them all
        return [name for name, lifecycle in self.lifecycles.items() if lifecycle.planner.touches_project(paths)]

    # --- what the services report: a click, a card, a ticket's body --------------------------------------

    def check_clicked(self, click: CheckClick, *, delivery: str = "") -> tuple[bool, str]:
        """The click goes to the project whose check run it is (each names its runs: ``check_name``);
        *Re-run all* of a commit's suite to every project with a check run on that commit."""
        single = self.single
        if click.action == "suite_rerequested" and single is None:
            rerun = [lifecycle for lifecycle in self.lifecycles.values()
                     if lifecycle.commit_check_run(click.repo, click.head_sha)]
            answers = [lifecycle.check_clicked(click, delivery=delivery) for lifecycle in rerun]
            if answers:
                return any(new for new, _ in answers), "; ".join(what for _, what in answers)
        return self._first_taker(lambda lifecycle: lifecycle.check_clicked(click, delivery=delivery))

    def card_edited(self, edit: CardEdit, *, delivery: str = "") -> tuple[bool, str]:
        """The card's move is kept by the project whose retrain ticket the card is."""
        return self._first_taker(lambda lifecycle: lifecycle.card_edited(edit, delivery=delivery))

    def _first_taker(self, offer: Callable[[Lifecycle], tuple[bool, str]]) -> tuple[bool, str]:
        """What the first project that does not answer "ignored: ..." makes of it (else the last's answer)."""
        for lifecycle in self.lifecycles.values():
            answer = offer(lifecycle)
            if not answer[1].startswith("ignored"):
                return answer
        return answer

    def ticket_body_edited(self, ticket_id: int, body: str, *, editor: str, source: str) -> int:
        """Only the project whose checklist the ticket holds reads its ticks."""
        return sum(lifecycle.ticket_body_edited(ticket_id, body, editor=editor, source=source)
                   for lifecycle in self.lifecycles.values()
                   if self.single is not None or lifecycle.planner.checklist_state(ticket_id))

    # --- effects --------------------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        """The outbox's handlers: each effect delivered by its project's (``payload["project"]``);
        one recorded without a project (the bot's own alerts, the digest, all on a deployment of one
        project) by the first project's. Looked up at delivery: projects come and go with merges."""
        return {kind: _ProjectHandler(kind, self) for kind in self.first.handlers()}

    def handlers_of(self, project: str | None) -> Mapping[str, Any]:
        if not project:
            return self.first.handlers()
        if project not in self.lifecycles:  # a merge removed it (or broke its mlops.toml) meanwhile
            raise PermanentError(f"the model project {project!r} is no longer served (its mlops.toml was removed or "
                                 "cannot be read): what it still owed is dropped")
        return self.lifecycles[project].handlers()


class _ProjectHandler:
    def __init__(self, kind: str, router: ProjectRouter):
        self._kind, self._router = kind, router

    def _handler(self, effect: EffectRow):
        return self._router.handlers_of(effect.payload.get("project"))[self._kind]

    def deliver(self, effect: EffectRow):
        return self._handler(effect).deliver(effect)

    def find_done(self, effect: EffectRow):
        return self._handler(effect).find_done(effect)
