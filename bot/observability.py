"""What operators see: Prometheus metrics (``GET /metrics``) and readiness (``GET /readyz``).

Every series lives in a registry owned by one ``Observability`` (one per bot, built by
``bot.app.build``), never in prometheus_client's global registry, so two bots in one process (or
two tests) never share a count. The series are fed from the places that know:

* events seen and handled: ``Lifecycle.handle``, the one dispatcher every entry goes through; the
  events it handles also say when a pipeline run finished (runs, durations, outcomes) and what a
  drift check found;
* effects delivered and failed: each effect handler is wrapped once (``observe_handlers``), which
  also sets the log context (event, effect, run) for everything the delivery logs;
* API requests by service and status, and GitHub's rate-limit budget: told by each adapter that
  reports them (``ReportsApiCalls``), from the extension point its SDK offers (``observe_adapters``);
* outbox depth and age, the effects blocked for want of a permission (by service and the
  permission to grant), and the last drift check per model: read from the state store at scrape
  time, so they are right after a restart and on a standby too.

Readiness asks the state store and each configured service one cheap question (GitHub's free
``GET /rate_limit``, Slack's ``auth.test``, Azure DevOps' resource areas), all at once with a
deadline, and keeps the answer a few seconds so a storm of probes costs the services nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from bot.logs import log_context, redact

if TYPE_CHECKING:
    from starlette.routing import Route

    from bot.app import BotApp
    from bot.events import Event
    from bot.store import EffectRow, Store

__all__ = ["READY_TTL_S", "Observability", "observe_adapters", "observe_handlers", "routes"]

log = logging.getLogger("mlops_bot.observability")

READY_TTL_S = 5.0  # how long a readiness answer is reused
READY_DEADLINE_S = 3.0  # how long one readiness check may take before it counts as "no answer"
SEVERITY = {"none": 0, "low": 1, "medium": 2, "high": 3}
_EFFECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class Observability:
    """The bot's metrics (in a registry of its own) and its readiness."""

    def __init__(self, *, store: Store | None = None, models: Callable[[], Iterable[str]] = tuple,
                 secrets: Iterable[str] = (),
                 ready_ttl_s: float = READY_TTL_S, ready_deadline_s: float = READY_DEADLINE_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._secrets = tuple(secrets)
        r = self.registry
        self.events_seen = Counter("mlops_bot_events_seen", "Events that reached the dispatcher, repeats included.",
                                   ["source", "kind"], registry=r)
        self.events_handled = Counter("mlops_bot_events_handled", "New events stored with the effects they cause.",
                                      ["source", "kind"], registry=r)
        self.effects_delivered = Counter("mlops_bot_effects_delivered", "Effects delivered (or found already done).",
                                         ["kind"], registry=r)
        self.effects_failed = Counter("mlops_bot_effects_failed", "Failed effect deliveries, by kind and error "
                                      "(transient: retried later; permanent: given up; blocked: waits for a permission).",
                                      ["kind", "error"], registry=r)
        self.effect_seconds = Histogram("mlops_bot_effect_delivery_seconds", "Time to deliver one effect.", ["kind"],
                                        buckets=_EFFECT_BUCKETS, registry=r)
        self.api_requests = Counter("mlops_bot_api_requests", "HTTP requests to outside services, by service and "
                                    "status (error: no answer).", ["service", "status"], registry=r)
        self.rate_limit_remaining = Gauge("mlops_bot_github_rate_limit_remaining",
                                          "GitHub requests left in the current window.", ["resource"], registry=r)
        self.rate_limit_limit = Gauge("mlops_bot_github_rate_limit_limit", "GitHub requests allowed per window.",
                                      ["resource"], registry=r)
        self.rate_limit_reset = Gauge("mlops_bot_github_rate_limit_reset_timestamp_seconds",
                                      "When GitHub's rate-limit window resets (Unix time).", ["resource"], registry=r)
        self.runs = Counter("mlops_bot_pipeline_runs", "Finished pipeline runs, by model and outcome.",
                            ["model", "outcome"], registry=r)
        self.run_seconds = Histogram("mlops_bot_pipeline_run_duration_seconds", "Duration of finished pipeline runs.",
                                     ["model", "outcome"], buckets=_RUN_BUCKETS, registry=r)
        self.drift_checks = Counter("mlops_bot_drift_checks", "Drift checks of production batches, by model and "
                                    "outcome (drift, no_drift, data_problem).", ["model", "outcome"], registry=r)
        if store is not None:
            r.register(_StateCollector(store, models))
        self.readiness = Readiness(ttl_s=ready_ttl_s, deadline_s=ready_deadline_s, monotonic=monotonic,
                                   describe=lambda error: redact(_describe(error), self._secrets))
        if store is not None:
            self.readiness.add("state", lambda: store.seen("readyz:ping"))

    # --- recording -------------------------------------------------------------------------------

    def event(self, event: Event, source: str, *, new: bool) -> None:
        labels = (source or "bot", event.kind)
        self.events_seen.labels(*labels).inc()
        if not new:
            return
        self.events_handled.labels(*labels).inc()
        if event.kind == "run_finished":
            self._run_finished(event)
        elif event.kind == "drift_found":
            outcome = "data_problem" if event.data_problem else "drift" if event.drifted else "no_drift"
            self.drift_checks.labels(event.model, outcome).inc()

    def _run_finished(self, event: Any) -> None:
        self.runs.labels(event.model, event.status).inc()
        seconds = _run_seconds(event.result or {})
        if seconds is not None:
            self.run_seconds.labels(event.model, event.status).observe(seconds)

    def effect_done(self, kind: str, seconds: float) -> None:
        self.effects_delivered.labels(kind).inc()
        self.effect_seconds.labels(kind).observe(seconds)

    def effect_failed(self, kind: str, error: BaseException) -> None:
        from integrations.ports import PermanentError, PermissionRefused, StillRunning, TransientError

        if isinstance(error, StillRunning):
            return  # a remote run still going: not a failure
        reason = ("blocked" if isinstance(error, PermissionRefused) else  # waits for a grant: not given up
                  "permanent" if isinstance(error, PermanentError) else
                  "transient" if isinstance(error, TransientError) else "unexpected")
        self.effects_failed.labels(kind, reason).inc()

    # What an adapter's client tells (``ApiCallObserver`` in integrations/ports.py):

    def api_response(self, service: str, status: int | str) -> None:
        """One request to ``service``: its answer's status, or ``"error"`` when none came."""
        self.api_requests.labels(service, str(status)).inc()

    def api_rate_limit(self, service: str, headers: Mapping[str, Any]) -> None:
        """The rate-limit headers of an answer (GitHub's ``x-ratelimit-*``, by the resource they are for)."""
        if service == "github" and headers and "x-ratelimit-remaining" in headers:
            resource = str(headers.get("x-ratelimit-resource") or "core")
            for gauge, header in ((self.rate_limit_remaining, "x-ratelimit-remaining"),
                                  (self.rate_limit_limit, "x-ratelimit-limit"),
                                  (self.rate_limit_reset, "x-ratelimit-reset")):
                try:
                    gauge.labels(resource).set(float(headers[header]))
                except (KeyError, TypeError, ValueError):
                    pass

    # --- exposition ------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every series, in Prometheus' text format."""
        return generate_latest(self.registry)


class Readiness:
    """Named checks run together, each with a deadline, the answer kept ``ttl_s`` seconds."""

    def __init__(self, *, ttl_s: float, deadline_s: float, monotonic: Callable[[], float],
                 describe: Callable[[BaseException], str]) -> None:
        self._checks: dict[str, Callable[[], Any]] = {}
        self.ttl_s, self.deadline_s = ttl_s, deadline_s  # public: tests and operators may change them
        self._monotonic, self._describe = monotonic, describe
        self._lock = threading.Lock()
        self._answer: tuple[float, bool, dict[str, str]] | None = None
        self._running: dict[str, _Attempt] = {}  # a check still out from an earlier round is not started again

    def add(self, name: str, check: Callable[[], Any]) -> None:
        """``check`` raises when ``name`` is not ready."""
        self._checks[name] = check

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, what each check said: "ok" or why not)."""
        with self._lock:  # one round at a time; the probes that queue behind it get its answer
            now = self._monotonic()
            if self._answer is not None and now - self._answer[0] < self.ttl_s:
                return self._answer[1], dict(self._answer[2])
            attempts = {}
            for name, check in self._checks.items():
                attempt = self._running.get(name)
                if attempt is None or attempt.done.is_set():
                    attempt = self._running[name] = _Attempt(check)
                attempts[name] = attempt
            ends = time.monotonic() + self.deadline_s
            results = {}
            for name, attempt in attempts.items():
                if attempt.done.wait(max(0.0, ends - time.monotonic())):
                    results[name] = "ok" if attempt.error is None else self._describe(attempt.error)
                else:
                    results[name] = f"no answer within {self.deadline_s:g} s"
            ready = all(result == "ok" for result in results.values())
            self._answer = (self._monotonic(), ready, results)
            return ready, dict(results)


class _Attempt:
    """One check, in a daemon thread of its own (a hung service must not hold up shutdown)."""

    def __init__(self, check: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._check = check
        threading.Thread(target=self._run, name="readyz-check", daemon=True).start()

    def _run(self) -> None:
        try:
            self._check()
        except BaseException as error:  # noqa: BLE001 - whatever it is, the service is not ready
            self.error = error
        finally:
            self.done.set()


class _StateCollector:
    """Series read from the state store when scraped: the outbox and the last drift check per model
    (``models``: the names of the models served at the time of the scrape, which merges may change)."""

    def __init__(self, store: Store, models: Callable[[], Iterable[str]]) -> None:
        self._store, self._models = store, models

    def describe(self) -> list:
        return []  # read at scrape time only; never at registration

    def collect(self):
        up = GaugeMetricFamily("mlops_bot_state_store_up", "1 when the state database answered this scrape.")
        try:
            stats = self._store.outbox_stats()
            blocked: dict[tuple[str, str], int] = {}
            for waiting in self._store.blocked_effects():
                key = (waiting.service, waiting.permission)
                blocked[key] = blocked.get(key, 0) + 1
            drift = {model: self._store.get_state("last_drift", model) for model in self._models()}
        except Exception as error:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: the state database did not answer: %s", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("mlops_bot_outbox_pending_effects", "Effects waiting to be delivered.",
                                value=stats["pending"])
        yield GaugeMetricFamily("mlops_bot_outbox_dead_effects", "Effects given up on (see mlops-bot events list).",
                                value=stats["dead"])
        yield GaugeMetricFamily("mlops_bot_outbox_oldest_pending_age_seconds",
                                "Age of the oldest pending effect (0 when none is pending).",
                                value=stats["oldest_pending_age_s"] or 0.0)
        waiting = GaugeMetricFamily("mlops_bot_blocked_effects", "Effects a service refused for want of a "
                                    "permission, waiting for it to be granted (see mlops-bot status).",
                                    labels=["service", "permission"])
        for (service, permission), count in sorted(blocked.items()):
            waiting.add_metric([service, permission], count)
        yield waiting
        severity = GaugeMetricFamily("mlops_bot_drift_severity", "Severity of the last drift check "
                                     "(0 none, 1 low, 2 medium, 3 high).", labels=["model"])
        detected = GaugeMetricFamily("mlops_bot_drift_detected", "1 when the last drift check found drift.",
                                     labels=["model"])
        features = GaugeMetricFamily("mlops_bot_drift_drifted_features", "Features that drifted in the last check.",
                                     labels=["model"])
        feature = GaugeMetricFamily("mlops_bot_drift_feature_drifted", "1 for each feature that drifted in the "
                                    "last check.", labels=["model", "feature"])
        checked = GaugeMetricFamily("mlops_bot_drift_last_check_timestamp_seconds", "When the last drift check ran "
                                    "(Unix time).", labels=["model"])
        for model, last in drift.items():
            if not last:
                continue
            severity.add_metric([model], SEVERITY.get(str(last.get("severity")), 0))
            detected.add_metric([model], 1 if last.get("drifted") else 0)
            names = [str(name) for name in last.get("features") or []]
            features.add_metric([model], len(names))
            for name in names:
                feature.add_metric([model, name], 1)
            moment = _parse_time(last.get("checked_at"))
            if moment is not None:
                checked.add_metric([model], moment.timestamp())
        yield from (severity, detected, features, feature, checked)


# --- feeding the metrics: effect handlers and SDK clients ------------------------------------------


def observe_handlers(handlers: Mapping[str, Any], observability: Observability) -> dict[str, Any]:
    """Each effect handler, counted and timed, its deliveries logged with their event, effect and run."""
    return {kind: _ObservedHandler(kind, handler, observability) for kind, handler in handlers.items()}


class _ObservedHandler:
    def __init__(self, kind: str, handler: Any, observability: Observability) -> None:
        self._kind, self._handler, self._observability = kind, handler, observability

    def deliver(self, effect: EffectRow):
        return self._observe(effect, self._handler.deliver)

    def find_done(self, effect: EffectRow):
        return self._observe(effect, self._handler.find_done)

    def _observe(self, effect: EffectRow, call: Callable[[EffectRow], Any]):
        with log_context(event=effect.cause, effect=effect.key, run=effect.payload.get("run_id")):
            started = time.perf_counter()
            try:
                delivered = call(effect)
            except BaseException as error:
                self._observability.effect_failed(self._kind, error)
                raise
            if delivered is not None:  # find_done answers None when the effect has not happened
                self._observability.effect_done(self._kind, time.perf_counter() - started)
            return delivered


def observe_adapters(observability: Observability, *adapters: Any) -> None:
    """Count the HTTP requests of each adapter that reports them, and check its service when ready is asked.

    An adapter says it can by being ``ReportsApiCalls`` (integrations/ports.py): its SDK client
    reports through the extension point the SDK offers (a urllib3 ``Retry`` for PyGithub and msrest,
    a retry handler for slack-sdk). Adapters that share a client share its report, and a service's
    readiness check is added once by its name. Adapters without a client (the embedded defaults,
    test fakes) are not such adapters.
    """
    from integrations.ports import ReportsApiCalls

    for adapter in adapters:
        if isinstance(adapter, ReportsApiCalls):
            adapter.report_api_calls(observability)
            observability.readiness.add(adapter.api_service, adapter.readiness)


# --- HTTP ------------------------------------------------------------------------------------------


def routes(bot: BotApp) -> list[Route]:
    """``GET /readyz`` and ``GET /metrics`` for the web app (both run off the event loop)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    observability = bot.observability or Observability(store=bot.store, models=lambda: list(bot.router.lifecycles))

    def readyz(_request: Request) -> JSONResponse:
        ready, checks = observability.readiness.check()
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if not ready:
            body["not_ready"] = sorted(name for name, result in checks.items() if result != "ok")
        return JSONResponse(body, status_code=200 if ready else 503)

    def metrics(_request: Request) -> Response:
        return Response(observability.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/readyz", readyz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]


# --- helpers ---------------------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    status = getattr(error, "status", None) or getattr(error, "status_code", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    prefix = f"{type(error).__name__}" + (f" ({status})" if status else "")
    return f"{prefix}: {text[:200]}" if text else prefix


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _run_seconds(result: Mapping[str, Any]) -> float | None:
    """How long a run took: from its start and end times, else the sum of its stages."""
    started, finished = _parse_time(result.get("started_at")), _parse_time(result.get("finished_at"))
    if started is not None and finished is not None:
        return max(0.0, (finished - started).total_seconds())
    stages = [s.get("duration_s") for s in result.get("stages") or [] if isinstance(s, Mapping)]
    durations = [float(d) for d in stages if isinstance(d, (int, float))]
    return sum(durations) if durations else None
