"""The composition root: ``build(settings, ...)`` makes the bot from its settings and any overrides.

Tests pass their own ports, store or clock; everything not passed is built from the settings, on
embedded defaults when no service is configured. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from bot import messages
from bot.events import ChangeMerged, CommandGiven, ModelPromoted, ProductionRemoved
from bot.lifecycle import Lifecycle
from bot.logs import secrets_of
from bot.observability import Observability, observe_adapters, observe_handlers
from bot.outbox import Blocked, DeliveryReport, Outbox
from bot.planner import CHANNEL_ALERTS, CHANNEL_DIGEST, Project
from bot.routing import ProjectRouter
from bot.settings import Settings
from bot.store import NewEffect, Store, WorkFence
from integrations.ports import PermissionRefused, TransientError
from pipeline.registry_port import (
    RecallsAliasMoves,
    RegistryError,
    RegistryPort,
    ReportsAliasMoves,
    alias_changes,
)

__all__ = ["BotApp", "build"]

log = logging.getLogger("mlops_bot")


@dataclass
class BotApp:
    settings: Settings
    store: Store
    router: ProjectRouter  # the model projects served, and which of them each event concerns
    outbox: Outbox
    clock: Callable[[], datetime]
    observability: Observability | None = None  # metrics and readiness (bot/observability.py)

    @property
    def lifecycles(self) -> list[Lifecycle]:
        """One per model project served, in the order they were found."""
        return list(self.router.lifecycles.values())

    @property
    def lifecycle(self) -> Lifecycle:
        """The first model project's (the only one's, on a deployment of one project); what the
        projects share (store, source control, tracker, registry) is the same in every lifecycle."""
        return self.lifecycles[0]

    @property
    def scm(self):
        return self.lifecycle.scm

    @property
    def tracker(self):
        return self.lifecycle.tracker

    @property
    def chat(self):
        return self.lifecycle.chat

    @property
    def registry(self):
        return self.lifecycle.registry

    # --- the jobs: the scheduler and the CLI call these same functions --------------------------

    def poll(self, *, fence: WorkFence | None = None) -> int:
        """Read new merged changes and comments; record each as an event (once) with its effects.

        ``fence``: the leader's lease, which the events and the cursors are stored under: a leader
        paused past it stops here (``LostLease``) instead of moving a cursor back over what the bot
        that took over has read since."""
        scm, seen = self.scm, 0
        source = scm.name
        try:
            changes, cursor = scm.merged_changes(self.store.cursor(f"{source}:changes"))
        except PermissionRefused as refused:
            # Nothing can be read until it is granted: said once per episode, tried again each cycle.
            if self.store.get_state("poll_refused", source) != {"permission": refused.permission}:
                log.error("poll: %s refuses the bot %s: %s", source, refused.permission, refused)
                self.store.put_state("poll_refused", source, {"permission": refused.permission})
            return 0
        if self.store.get_state("poll_refused", source):
            self.store.put_state("poll_refused", source, {})
        if not changes and cursor is not None and self.store.cursor(f"{source}:changes") != cursor:
            self.store.set_cursor(f"{source}:changes", cursor, fence=fence)
        try:
            seen += self._handle_all([ChangeMerged(source, change) for change in changes], (f"{source}:changes", cursor),
                                     fence=fence)
            comments, cursor = scm.new_comments(self.store.cursor(f"{source}:comments"))
            seen += self._handle_all([CommandGiven(source, comment) for comment in comments],
                                     (f"{source}:comments", cursor), fence=fence)
            # boxes ticked in each project's retrain ticket's checklist
            seen += sum(lifecycle.poll_checklist() for lifecycle in self.lifecycles)
        except TransientError as exc:
            # A rate limit or a spent per-cycle request budget part-way: what was handled is stored with
            # its cursor; the cursor never passes what was not, so the rest comes again next cycle.
            log.warning("poll: %s; the rest waits for the next cycle", exc)
        self.bootstrap()
        seen += self.watch_registry()
        if seen:
            log.info("poll: %d new event(s) from %s", seen, source)
        return seen

    def watch_registry(self) -> int:
        """``watch_registry_of`` each model project served."""
        return sum(self.watch_registry_of(lifecycle) for lifecycle in self.lifecycles)

    def watch_registry_of(self, lifecycle: Lifecycle) -> int:
        """Production moved by someone else in the registry (MLflow's UI, another tool): recorded in
        the version's history and said where the bot's own promotions are, once. One request when
        nothing moved. The first look only records what it finds: aliases set before the bot came are
        not news. The production alias deleted is said too (``ProductionRemoved``). Each is linked
        for ``trace`` from the version that gained or lost production."""
        registry = self.registry
        if not isinstance(registry, ReportsAliasMoves):
            return 0
        model = lifecycle.project.name
        production = registry.production_alias
        watched = (production, registry.candidate_alias)
        try:
            current = registry.aliases(model)
        except RegistryError as exc:
            log.warning("registry: cannot read the aliases of %s: %s", model, exc)
            return 0
        known = self.store.get_state("aliases", model)
        changes = alias_changes(known or {}, current, watched)
        moves = registry.adopt_external_moves(model, changes) if changes else []
        outside = [move for move in moves if move.alias == production]
        unexplained = [c for c in changes if c.alias == production and not any(m.version == c.after for m in outside)]
        if known is not None and unexplained and isinstance(registry, RecallsAliasMoves):
            # Recorded by an earlier look that stopped before saying it (adopt records each move once,
            # so it does not return it again): the newest recorded move, if it was made outside the bot.
            last = (registry.alias_history(model, production) or [None])[-1]
            if last is not None and last.by == "outside mlops-bot" and last.version == unexplained[-1].after:
                outside.append(last)
        handled = 0
        if known is not None:
            for move in outside:
                cause = f"alias:{move.alias}:{move.at.isoformat()}"
                moved_by = ("registry", f"outside mlops-bot:{move.alias}@{move.at.isoformat()}")
                if move.version is not None:
                    event = ModelPromoted(model, move.version, move.previous,
                                          reason=f"the {move.alias} alias was moved outside mlops-bot", cause=cause)
                    self.store.link("model", f"{model}:v{move.version}", "promoted_by", *moved_by)
                elif move.previous is not None:
                    event = ProductionRemoved(model, move.previous, move.alias, cause=cause)
                    self.store.link("model", f"{model}:v{move.previous}", "removed_from_production_by", *moved_by)
                else:
                    continue
                handled += int(lifecycle.handle(event, source="registry"))
        if current != known:
            self.store.put_state("aliases", model, current)
        return handled

    def _handle_all(self, events: list, cursor: tuple[str, str | None], *, fence: WorkFence | None = None) -> int:
        """Handle a poll's events in order; the cursor moves with the last one, in its transaction."""
        if not events:
            return 0
        known = self.store.seen_among([event.key for event in events])
        handled = 0
        for index, event in enumerate(events):
            move = cursor if index == len(events) - 1 and cursor[1] else None
            if event.key in known:
                if move:
                    self.store.set_cursor(*move, fence=fence)
                continue
            handled += self.router.handle(event, cursor=move, known_new=True, fence=fence)
        return handled

    def bootstrap(self) -> bool:
        """With no model in production and none ever trained, train the first one (once per project)."""
        started = [self._bootstrap(lifecycle.project.name) for lifecycle in self.lifecycles]
        return any(started)

    def _bootstrap(self, model: str) -> bool:
        if self.registry.production(model) is not None or self.registry.runs(model, limit=1):
            return False
        if any(e.kind == "pipeline.run" and e.lane == f"pipeline:{model}" for e in self.store.effects(status="pending")):
            return False  # a merge or a command already asked for the first run
        key = f"bootstrap:{model}"
        if self.store.seen(key):
            return False
        run_id = f"run-bootstrap-{model}"
        effect = NewEffect(f"pipeline:{run_id}", "pipeline.run", {
            "project": model, "run_id": run_id, "trigger": "bootstrap",
            "reason": "first model: nothing in production yet",
            "origin": {"kind": "bootstrap", "episode": f"run:{run_id}"}, "promote": True,
        }, lane=f"pipeline:{model}")
        return self.store.ingest(key, "bootstrap", "bot", {"model": model}, [effect])

    def answer_by_response_url(self, response_url: str, text: str) -> None:
        """Answer a Slack click privately through its ``response_url``: what a click is answered
        with when ``chat.postEphemeral`` cannot be used (or no Slack chat is set up to use it)."""
        from integrations.slack import answer_by_response_url

        answer_by_response_url(response_url, text)

    def monitor(self) -> int:
        from bot.monitor import check_new_batches

        return sum(check_new_batches(lifecycle) for lifecycle in self.lifecycles)

    def deliver(self, *, should_stop: Callable[[], bool] = lambda: False, until_idle: bool = True,
                fence: WorkFence | None = None) -> DeliveryReport:
        """Deliver due effects; with ``until_idle``, also those that the delivered ones caused.

        ``fence``: the leader's lease, which every outcome is stored under (``LostLease`` once it is gone).
        """
        total = DeliveryReport()
        while True:
            report = self.outbox.deliver_due(should_stop=should_stop, fence=fence)
            total = DeliveryReport(*(a + b for a, b in zip(astuple(total), astuple(report))))
            done = report.delivered + report.recovered
            if not until_idle or should_stop() or done == 0:
                return total

    def digest(self) -> bool:
        """Post the digest if a time of MLOPS_DIGEST_CRON (local time) has come since the last one.

        Never merely because the bot started: the first call records when the bot started, and the
        first digest waits for the first scheduled time after it. The scheduler calls this at each
        cron time and at start (to catch one missed while the bot was down); ``run --once`` calls
        it every cycle. Several missed times make one digest, with a row for each model project.
        """
        from bot.scheduler import digest_due, local_timezone

        now = self.clock()
        # The projects' names, as one digest's: the single project's name keeps its earlier mark (a
        # merge that adds or removes a project starts a new mark, so that digest waits for the next time).
        model = "+".join(self.router.lifecycles)
        mark = self.store.get_state("digest", model)
        if mark is None:
            self.store.put_state("digest", model, {"since": now.isoformat(), "started": now.isoformat()})
            return False
        due = digest_due(self.settings.digest_cron, since=datetime.fromisoformat(mark["since"]), now=now)
        if due is None:
            return False
        day = due.astimezone(local_timezone()).date().isoformat()
        text = messages.digest_text(day, [self._digest_row(lifecycle, now) for lifecycle in self.lifecycles])
        # Keyed by the scheduled time: a repeat after a crash between these two writes posts nothing new.
        key = f"digest:{model}:{due.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ')}"
        effect = NewEffect(key, "chat.post", {"channel": CHANNEL_DIGEST, "text": text}, lane=f"chat:{CHANNEL_DIGEST}")
        posted = self.store.ingest(key, "digest", "bot", {"day": day, "due": due.isoformat()}, [effect])
        self.store.put_state("digest", model, mark | {"since": now.isoformat()})
        return posted

    def _digest_row(self, lifecycle: Lifecycle, now: datetime) -> dict:
        model = lifecycle.project.name
        production = self.registry.production(model)
        since = now - timedelta(days=1)
        runs = [r for r in self.registry.runs(model, limit=200) if r.started_at >= since]
        try:
            ticket = self.tracker.find_open(f"retrain:{model}")
        except TransientError:  # a rate limit or this cycle's request budget: the last known ticket will do
            ticket = lifecycle.known_ticket(model)
        last = self.store.get_state("last_drift", model) or {}
        return {
            "model": model,
            "version": production.version if production else None,
            "age": _age(now - production.created_at) if production else "",
            "health": f"{last['severity']} drift" if last.get("drifted") else "no drift seen",
            "tickets": f"ticket:{ticket.id}" if ticket else "",
            "runs": len(runs),
            "performance": messages.performance_lines(self.store.get_state("performance", model)),
        }

    def run_once(self, *, fence: WorkFence | None = None) -> dict[str, int]:
        """Every job once, in the order that lets one cycle finish what it starts.

        The digest is among them but posts only when its cron time has come (see ``digest``).
        ``fence`` as in ``deliver``.
        """
        polled = self.poll(fence=fence)
        delivered = self.deliver(fence=fence).delivered
        checked = self.monitor()
        delivered += self.deliver(fence=fence).delivered
        digests = int(self.digest())
        delivered += self.deliver(fence=fence).delivered
        return {"events": polled, "batches": checked, "effects": delivered, "digests": digests}


def build(
    settings: Settings,
    *,
    scm=None,
    tracker=None,
    chat=None,
    engine=None,
    store: Store | None = None,
    registry=None,
    clock: Callable[[], datetime] | None = None,
    out: TextIO | None = sys.stdout,
) -> BotApp:
    """Make the bot: real adapters for whatever is configured, embedded defaults for the rest.

    It serves the model project of MLOPS_PROJECT_DIR; with that unset, every model project of the
    repository it starts in (bot/projects.py), each with its own lifecycle over the shared ports."""
    from bot.projects import FoundProject, git_root, projects_to_serve, shared_project_settings
    from integrations.local import ConsoleChat, LocalBoard, LocalGitSource, create_local_tables
    from pipeline.spec import load_project

    clock = clock or (lambda: datetime.now(UTC))
    base_settings = settings  # before a found project's folder is filled in: what a later search reads
    served = projects_to_serve(settings)
    if served is None:
        spec = load_project(settings.project_dir)
        repo_dir = settings.repo_dir or git_root(spec.root) or spec.root
        found = [FoundProject(spec, _relative_path(spec.root, repo_dir))]
    else:
        repo_dir, in_repository = served
        found = list(in_repository.projects)
        for problem in in_repository.problems:  # the others are served: doctor names these too
            log.warning("a model project in %s is not served: %s", repo_dir, problem.reason)
        if len(found) == 1:
            settings = settings.model_copy(update={"project_dir": found[0].spec.root})
    store = store or Store(settings.state_database_url, clock=clock)
    with store.schema_transaction() as conn:  # two bots starting together on PostgreSQL create them once
        create_local_tables(conn)
    registry = registry or open_registry(settings, clock=clock)
    if settings.azure_enabled:
        azure_scm, azure_tracker, azure_engine = _azure(settings, registry)
        scm, tracker, engine = scm or azure_scm, tracker or azure_tracker, engine or azure_engine
    if settings.github_enabled and (scm is None or tracker is None or (engine is None and settings.github_workflow)):
        github_scm, github_tracker = _github(settings, clock)
        scm, tracker = scm or github_scm, tracker or github_tracker
        if engine is None and settings.github_workflow:
            from integrations.github import GitHubActionsEngine

            engine = GitHubActionsEngine(github_scm.client, workflow=settings.github_workflow,
                                         ref=settings.watch_branch or "main")
    if scm is None and git_root(repo_dir) is None:  # what doctor says too, said where the bot starts
        log.warning("no git repository holds %s: merged changes will not be watched (run `git init` there, or "
                    "set MLOPS_REPO_DIR to the repository whose commits should trigger runs)", repo_dir)
    scm = scm or LocalGitSource(store.engine, repo_dir, branch=settings.watch_branch, bot_name=settings.bot_name,
                                clock=clock, out=out)
    tracker = tracker or LocalBoard(store.engine, clock=clock, bot_name=settings.bot_name, out=out)
    if chat is None and settings.slack_bot_token is None:
        chat = ConsoleChat(store.engine, out=out, clock=clock)
    board = _github_project(settings, tracker) or _azure_board(settings, tracker)
    # The models of the projects served when /metrics is scraped (``router``, made below, follows merges).
    observability = Observability(store=store, models=lambda: list(router.lifecycles), secrets=secrets_of(settings))
    observe_adapters(observability, scm, tracker)

    def settings_of(each: FoundProject, shared: bool) -> Settings:
        if shared:
            return shared_project_settings(base_settings, each)
        # The one project: the bot's own settings, unless merges have since left another project alone.
        return settings if each.spec.root == found[0].spec.root else \
            base_settings.model_copy(update={"project_dir": each.spec.root})

    def lifecycle_of(each: FoundProject, shared: bool) -> Lifecycle:
        """The project's lifecycle; ``shared``: beside other projects of the repository."""
        spec = each.spec
        project_settings = settings_of(each, shared)
        # Slack routes each project's messages to its own channels (MLOPS_SLACK_PROJECT_CHANNELS).
        project_chat = chat or _slack(settings, spec.name)
        project_engine = engine or _local_engine(project_settings, registry, scm, spec, each.repo_path, clock)
        paths = (each.repo_path,) if shared else tuple(settings.project_paths) or (each.repo_path,)
        project = Project(spec.name, spec.root, paths, shared=shared)
        observe_adapters(observability, project_chat, project_engine)
        return Lifecycle(settings=project_settings, store=store, registry=registry, scm=scm, tracker=tracker,
                         chat=project_chat, engine=project_engine, project=project, clock=clock,
                         observer=observability, board=board)

    # Where the bot serves the repository's projects, a merge that adds or removes one is followed.
    search = (lambda: projects_to_serve(base_settings)) if served is not None else None
    router = ProjectRouter([lifecycle_of(each, len(found) > 1) for each in found], store,
                           search=search, make=lifecycle_of)
    chat = router.first.chat

    def alert_blocked(blocked: Blocked) -> None:
        """One alert per episode of a refused permission, in the alerts channel, unless the chat is what refuses."""
        if blocked.service == chat.name:
            return  # the chat itself refuses: the log, `status` and /metrics say so
        key = f"blocked:{blocked.service}:{blocked.permission}:{blocked.since.isoformat()}"
        text = (f"⛔ {blocked.service} refuses mlops-bot **{blocked.permission}**: {blocked.message}\n"
                f"What needs it waits, tried again every {blocked.retry_s / 60:g} min, and goes on once it is granted.")
        store.ingest(key, "permission_blocked", "outbox", {"service": blocked.service, "permission": blocked.permission,
                                                           "effect": blocked.effect_key},
                     [NewEffect(f"chat:{key}", "chat.post", {"channel": CHANNEL_ALERTS, "text": text},
                                lane=f"chat:{CHANNEL_ALERTS}")])

    outbox = Outbox(store, observe_handlers(router.handlers(), observability),
                    ingest=lambda event: router.handle(event), clock=clock, on_blocked=alert_blocked)
    return BotApp(settings=settings, store=store, router=router, outbox=outbox, clock=clock,
                  observability=observability)


def _local_engine(settings: Settings, registry, scm, spec, repo_path: str, clock):
    """One project's embedded engine: runs on this machine, from a checkout of the merge commit when
    the source is GitHub."""
    from integrations.local import InProcessEngine
    from pipeline.run import ProductionFolders

    engine = InProcessEngine(registry, {spec.name: spec.root}, clock=clock,
                             production_data=ProductionFolders(settings.batches_dir, settings.label_files_dir))
    if settings.github_enabled:  # merged pull requests run from the merge commit's code
        engine = _github_workspace_engine(settings, scm, engine, settings.project_path or repo_path) or engine
    return engine


def _github(settings: Settings, clock):
    from integrations.github import GitHubAuth, GitHubClient, GitHubIssues, GitHubSource, connect

    secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
    auth = GitHubAuth(token=secret(settings.github_token), app_id=settings.github_app_id,
                      private_key=(secret(settings.github_app_private_key) or "").replace("\\n", "\n") or None,
                      installation_id=settings.github_app_installation_id)
    client = GitHubClient(connect(auth, base_url=settings.github_api_url, timeout=settings.github_timeout_s),
                          settings.github_repository,
                          bot_login=settings.bot_name, reserve=settings.github_rate_limit_reserve, clock=clock,
                          cycle_budget=settings.github_cycle_budget, cycle_s=settings.poll_interval_s)
    return GitHubSource(client, branch=settings.watch_branch), GitHubIssues(client)


def _github_project(settings: Settings, tracker):
    """The GitHub Project the retrain tickets' cards move on (MLOPS_GITHUB_PROJECT), over the issues'
    own client; None when unset, or when the tickets are not GitHub issues (Azure Boards)."""
    from integrations.github import GitHubIssues
    from integrations.github_project_refs import parse_project_ref
    from integrations.github_projects import GitHubProjectBoard

    if not settings.github_project:
        return None
    if not isinstance(tracker, GitHubIssues):
        log.warning("MLOPS_GITHUB_PROJECT is set but retrain tickets are %s tickets, not GitHub issues: no cards "
                    "move (unset it, or the Azure DevOps settings)", tracker.name)
        return None
    return GitHubProjectBoard(tracker.client, parse_project_ref(settings.github_project),
                              statuses=settings.github_project_statuses)


def _azure_board(settings: Settings, tracker, client=None):
    """The retrain tickets' work items moving through their type's states on Azure Boards, whenever
    the tickets are Azure Boards work items (the board's columns are the states: nothing to set up);
    ``client`` defaults to the tracker's own. None for any other tracker."""
    from integrations.azure_boards_states import AzureBoardsStates
    from integrations.azure_devops import AzureBoards

    if not isinstance(tracker, AzureBoards):
        return None
    return AzureBoardsStates(client or tracker.client, project=tracker.project,
                             work_item_type=tracker.work_item_type)


def _github_workspace_engine(settings: Settings, scm, engine, project_path: str):
    """The in-process engine on checkouts of the GitHub repository (integrations/workspace.py)."""
    from integrations.github import GitHubSource
    from integrations.workspace import GitWorkspaces, WorkspaceEngine

    if not isinstance(scm, GitHubSource):
        return None
    client = scm.client
    workspaces = GitWorkspaces(settings.data_dir.expanduser().resolve() / "workspaces", client.clone_url,
                               token=client.token, timeout_s=max(60.0, settings.github_timeout_s * 40))
    return WorkspaceEngine(engine, workspaces, project_path=project_path)


def _azure(settings: Settings, registry):
    """Azure Boards always; Azure Repos and Azure Pipelines when their settings name them."""
    import os

    # The SDK reads its cache folder when imported: keep it in the bot's data folder, not in ~.
    os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", str(settings.data_dir.expanduser().resolve() / "azure-devops-cache"))
    from integrations.azure_devops import AzureBoards, AzurePipelines, AzureRepos, connect

    client = connect(settings.azure_devops_org_url, settings.azure_devops_pat.get_secret_value())
    project = settings.azure_devops_project
    tracker = AzureBoards(client, project=project, team=settings.azure_team,
                          work_item_type=settings.azure_work_item_type, area_path=settings.azure_area_path,
                          process=settings.azure_process)
    scm = engine = None
    if settings.azure_repository:
        scm = AzureRepos(client, project=project, repository=settings.azure_repository,
                         branch=settings.watch_branch or "main", bot_user=settings.bot_name,
                         permissions=settings.azure_permissions)
    if settings.azure_pipeline_id is not None:
        engine = AzurePipelines(client, project=project, pipeline_id=settings.azure_pipeline_id,
                                branch=settings.watch_branch or "main")
    return scm, tracker, engine


def _slack(settings: Settings, project: str | None = None):
    """Slack chat, its channels routed for ``project`` (by default the one in MLOPS_PROJECT_DIR)."""
    from integrations.slack import SlackChat, connect, routes

    if project is None and settings.slack_project_channels:
        from pipeline.spec import load_project

        project = load_project(settings.project_dir).name
    client = connect(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url)
    channels = routes(settings.slack_channels, settings.slack_project_channels, project)
    return SlackChat(client, channels=channels, mention_group=settings.slack_mention_group)


def open_registry(settings: Settings, *, clock: Callable[[], datetime] | None = None) -> RegistryPort:
    """The model registry the settings name: MLflow at MLFLOW_TRACKING_URI, else the embedded MLflow
    store (a SQLite file in MLOPS_DATA_DIR/mlflow, artifacts beside it). The one place it is made."""
    from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri

    clock = clock or (lambda: datetime.now(UTC))
    tracking_uri = settings.mlflow_tracking_uri or embedded_tracking_uri(settings.data_dir)
    # MLflow reads its credentials from the environment only: give it those that came from .env.
    for name, value in (("MLFLOW_TRACKING_TOKEN", settings.mlflow_tracking_token),
                        ("MLFLOW_TRACKING_USERNAME", settings.mlflow_tracking_username),
                        ("MLFLOW_TRACKING_PASSWORD", settings.mlflow_tracking_password)):
        if value is not None and name not in os.environ:
            os.environ[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    registry = MlflowRegistry(tracking_uri, settings.mlflow_registry_uri,
                              data_dir=settings.data_dir.expanduser().resolve(),
                              production_alias=settings.production_alias, candidate_alias=settings.candidate_alias,
                              clock=clock)
    # What the bot kept in its own folder registry before MLflow moves there, once (asks MLflow
    # nothing once done). An MLflow that cannot be reached now delays it to the next start.
    from sqlite3 import Error as FolderIndexError

    from integrations.mlflow_import import import_folder_registry

    try:
        import_folder_registry(settings.registry_dir, registry, data_dir=settings.data_dir)
    except (RegistryError, OSError, FolderIndexError) as exc:  # MLflow away, or the old folder unreadable
        log.warning("the folder registry %s is not imported into MLflow yet (tried again at the next start): %s",
                    settings.registry_dir, exc)
    return registry


def _relative_path(path: Path, root: Path) -> str:
    try:
        relative = path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return ""
    return "" if relative == "." else relative


def _age(delta: timedelta) -> str:
    if delta.days >= 1:
        return f"{delta.days} d"
    hours = delta.seconds // 3600
    return f"{hours} h" if hours else f"{delta.seconds // 60} min"
