"""The reusable part of the local service emulators.

An emulator is a small HTTP server on a free loopback port, run in a background
thread, that plays one outside service for that service's real SDK client. This
module holds what every emulator needs and nothing service-specific:

- ``Clock``: the emulator's time, live or frozen, that tests can move.
- ``Request`` / ``Response`` / ``Router``: routing by method and path template.
- ``RequestLog``: every request, with its status and whether it was charged
  against a rate limit, for tests and benchmarks to count.
- ``Faults``: scripted or random failures (5xx, timeouts, rate limits, and a
  write that is applied but whose response is lost).
- ``OpenAPISchemas``: checks a JSON body against the schema an OpenAPI 3.0 or
  Swagger 2.0 document gives for an operation and status.
- ``HttpEmulator``: the server itself; a service subclasses it, registers
  routes and overrides the hooks it needs (``dispatch``, ``not_found``,
  ``fault_response``, ``finalize``).
"""

from __future__ import annotations

import copy
import email.utils
import hashlib
import json
import random
import re
import socket
import threading
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

__all__ = [
    "FAULT_KINDS",
    "free_port",
    "Clock",
    "Faults",
    "FaultRule",
    "HttpEmulator",
    "LoggedRequest",
    "OpenAPISchemas",
    "Request",
    "RequestLog",
    "Response",
    "SlidingWindow",
    "TokenBucket",
    "Route",
    "Router",
    "etag_of",
    "format_http_date",
    "iso",
    "json_bytes",
    "paginate",
    "parse_http_date",
    "parse_iso",
]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

# ---------------------------------------------------------------------------
# Time and JSON helpers


class Clock:
    """The emulator's time, always UTC and to the second (as GitHub's timestamps are).

    ``Clock()`` follows the wall clock; ``Clock(start)`` stands still at ``start``.
    Either moves forward with ``advance`` or jumps with ``set``.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen = start.astimezone(UTC) if start is not None else None
        self._offset = timedelta()

    def now(self) -> datetime:
        with self._lock:
            base = self._frozen if self._frozen is not None else datetime.now(UTC) + self._offset
        return base.replace(microsecond=0)

    def timestamp(self) -> int:
        return int(self.now().timestamp())

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        step = timedelta(seconds=seconds, **delta)
        with self._lock:
            if self._frozen is not None:
                self._frozen += step
            else:
                self._offset += step
        return self.now()

    def set(self, when: datetime) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen = when.astimezone(UTC)
            else:
                self._offset = when.astimezone(UTC) - datetime.now(UTC)

    def seconds(self) -> float:
        """The emulator's time as a POSIX timestamp to the microsecond: what rate-limit windows
        measure (``now`` is cut to the second, as the services' timestamps are)."""
        with self._lock:
            base = self._frozen if self._frozen is not None else datetime.now(UTC) + self._offset
        return base.timestamp()

    def freeze(self) -> None:
        """Stand still at the current time from now on (a live clock becomes a frozen one)."""
        with self._lock:
            if self._frozen is None:
                self._frozen = datetime.now(UTC) + self._offset

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass: a frozen clock moves on at once, a live one waits. A client paced on
        the same clock (``monotonic=clock.seconds, sleep=clock.sleep``) then waits no wall time."""
        if seconds <= 0:
            return
        with self._lock:
            frozen = self._frozen is not None
        if frozen:
            self.advance(seconds)
        else:
            time.sleep(seconds)


def iso(when: datetime | None) -> str | None:
    """``2011-04-14T16:00:49Z``, the form GitHub and most JSON APIs use."""
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parses an ISO 8601 timestamp (``Z`` or an offset; a naive one is taken as UTC)."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_http_date(when: datetime) -> str:
    return email.utils.format_datetime(when.astimezone(UTC), usegmt=True)


def parse_http_date(text: str) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def etag_of(payload: bytes, salt: str = "") -> str:
    """A weak ETag, as GitHub sends: ``W/"<sha256>"``."""
    return 'W/"' + hashlib.sha256(salt.encode() + b"\0" + payload).hexdigest() + '"'


# ---------------------------------------------------------------------------
# Requests, responses, routes


@dataclass
class Request:
    """One request as the emulator sees it. ``path`` is without the emulator's prefix."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    route: Route | None = None
    identity: Any = None  # set by the service's authentication
    raw_path: str = ""  # as sent, with the prefix and the query

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        """The parsed JSON body; ``None`` when empty. Raises ``ValueError`` when malformed."""
        if not self.body.strip():
            return None
        return json.loads(self.body)

    def logged_body(self) -> Any:
        try:
            return self.json()
        except ValueError:
            return self.body.decode("utf-8", "replace")


@dataclass
class Response:
    """A response to send. ``body`` is JSON-able data, raw ``bytes``, or ``None`` (no body)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    charged: bool = False
    last_modified: datetime | None = None
    content_type: str = "application/json; charset=utf-8"

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json_bytes(self.body)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/repos/{owner}/{repo}/issues/{issue_number}"
    name: str  # e.g. the OpenAPI operationId, "issues/get"
    handler: Handler
    pattern: re.Pattern[str]

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


class Router:
    """Routes by method and path template; ``{name}`` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, name: str | None = None) -> Route:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        route = Route(method.upper(), template, name or f"{method.upper()} {template}", handler, re.compile(regex))
        self._routes.append(route)
        return route

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        # A literal segment wins over a parameter ("/issues/comments" over "/issues/{issue_number}").
        best: tuple[int, Route, dict[str, str]] | None = None
        for route in self._routes:
            if route.method != method.upper():
                continue
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            literal = len(re.sub(r"\{\w+\}", "", route.template))
            if best is None or literal > best[0]:
                params = {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
                best = (literal, route, params)
        return (best[1], best[2]) if best else (None, {})


def paginate(
    items: Sequence[Any], request: Request, base_url: str, *, default: int = 30, maximum: int = 100
) -> tuple[list[Any], dict[str, str]]:
    """One page of ``items`` per ``per_page``/``page``, and the ``Link`` header GitHub would send.

    Link URLs are absolute (``base_url`` + the request's path) and keep every other query
    parameter; the relations come in GitHub's order: prev, next, last, first.
    """

    def number(name: str, fallback: int) -> int:
        try:
            return int(request.query.get(name, fallback))
        except ValueError:
            return fallback

    per_page = min(max(number("per_page", default), 1), maximum)
    page = max(number("page", 1), 1)
    last = max((len(items) + per_page - 1) // per_page, 1)
    chunk = list(items[(page - 1) * per_page : page * per_page])

    def url(n: int) -> str:
        query = {k: v for k, v in request.query.items() if k != "page"}
        query["per_page"] = str(per_page)
        query["page"] = str(n)
        return f"{base_url}{request.path}?{urllib.parse.urlencode(query)}"

    links = []
    if page > 1:
        links.append(f'<{url(min(page - 1, last))}>; rel="prev"')
    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
    return chunk, ({"Link": ", ".join(links)} if links else {})


# ---------------------------------------------------------------------------
# The request log


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # without prefix and query
    query: dict[str, str]
    status: int | None  # None: the connection was dropped before any answer
    charged: bool  # counted against a rate limit
    timestamp: datetime  # wall clock, for benchmarks
    body: Any  # the request body, parsed as JSON when it is JSON
    route: str | None = None  # the route's name
    fault: str | None = None  # the fault kind applied, if any
    identity: str | None = None  # who made it, as the service names them

    @property
    def answered(self) -> bool:
        return self.status is not None


class RequestLog:
    """Every request the emulator received, in order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.entries)

    @property
    def last(self) -> LoggedRequest | None:
        with self._lock:
            return self._entries[-1] if self._entries else None

    def filter(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        route: str | None = None,
        status: int | None = None,
        charged: bool | None = None,
        fault: str | None = None,
    ) -> list[LoggedRequest]:
        """Entries matching every given criterion; ``path`` is a regex matched in full."""
        found = []
        for entry in self.entries:
            if method is not None and entry.method != method.upper():
                continue
            if path is not None and re.fullmatch(path, entry.path) is None:
                continue
            if route is not None and entry.route != route:
                continue
            if status is not None and entry.status != status:
                continue
            if charged is not None and entry.charged != charged:
                continue
            if fault is not None and entry.fault != fault:
                continue
            found.append(entry)
        return found

    def count(self, method: str | None = None, path: str | None = None, **criteria: Any) -> int:
        return len(self.filter(method, path, **criteria))

    def charged(self) -> int:
        return self.count(charged=True)

    def writes(self) -> list[LoggedRequest]:
        return [e for e in self.entries if e.method not in ("GET", "HEAD", "OPTIONS")]


# ---------------------------------------------------------------------------
# Rate limits


class SlidingWindow:
    """At most ``limit`` requests in any ``period`` seconds, as the services count their limits.

    ``take(now)`` admits a request (and counts it) when the window has room and returns 0;
    otherwise it counts nothing and returns the seconds until the oldest request leaves the window.
    Thread-safe.
    """

    def __init__(self, limit: int, period: float) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("a window needs a limit of at least 1 and a positive period")
        self.limit, self.period = limit, period
        self._times: deque[float] = deque()
        self._lock = threading.RLock()

    def wait(self, now: float) -> float:
        """The seconds until the window has room (0: it has room now); counts nothing."""
        with self._lock:
            while self._times and self._times[0] <= now - self.period:
                self._times.popleft()
            return self._times[0] + self.period - now if len(self._times) >= self.limit else 0.0

    def take(self, now: float) -> float:
        with self._lock:
            wait = self.wait(now)
            if wait == 0:
                self._times.append(now)
            return wait


class TokenBucket:
    """``rate`` requests a second on average, with bursts of up to ``burst`` (Slack's "1 per
    second, short bursts allowed"). ``take(now)`` returns 0 and spends a token when one is left,
    otherwise the seconds until the next one. Thread-safe."""

    def __init__(self, burst: int, rate: float) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a bucket needs a burst of at least 1 and a positive rate")
        self.burst, self.rate = burst, rate
        self._tokens, self._at = float(burst), None
        self._lock = threading.Lock()

    def take(self, now: float) -> float:
        with self._lock:
            if self._at is not None:
                self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


# ---------------------------------------------------------------------------
# Faults

FAULT_KINDS = (
    "500",
    "502",
    "503",
    "timeout",
    "rate_limit_primary",
    "rate_limit_secondary",
    "429",
    "lost_response",
)



def free_port() -> int:
    """A loopback port nothing listens on now (for a server a test or benchmark starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

@dataclass
class FaultRule:
    """``target`` is a route name, a route key (``"POST /repos/{owner}/{repo}/issues"``),
    or a regex matched in full against ``"METHOD /concrete/path"`` or, to pick one page of a list,
    ``"METHOD /concrete/path?query"`` (the query as sent)."""

    target: str
    kind: str
    times: int | None = 1  # None: every time
    retry_after: int = 60
    hold: float | None = None  # for "timeout": seconds to hold before dropping

    def matches(self, request: Request) -> bool:
        route = request.route
        if route is not None and self.target in (route.name, route.key):
            return True
        if re.fullmatch(self.target, f"{request.method} {request.path}") is not None:
            return True
        query = request.raw_path.partition("?")[2]
        return bool(query) and re.fullmatch(self.target, f"{request.method} {request.path}?{query}") is not None


@dataclass(frozen=True)
class FiredFault:
    kind: str
    method: str
    path: str


class Faults:
    """Failures to inject, scripted per route or drawn at random.

    Kinds (``FAULT_KINDS``): ``"500"``, ``"502"``, ``"503"`` (status codes, ints accepted);
    ``"timeout"`` (hold the response ``hold`` seconds, longer than the client's timeout, then
    close without answering); ``"rate_limit_primary"`` and ``"rate_limit_secondary"`` (the
    service's 403s); ``"429"`` (with ``Retry-After``); ``"lost_response"`` (apply the request,
    then close the connection without answering).
    """

    def __init__(self, *, timeout_hold: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng: random.Random | None = None
        self._rate = 0.0
        self._random_kinds: tuple[str, ...] = ()
        self._random_target: str | None = None
        self._random_retry_after = 60
        self.timeout_hold = timeout_hold
        self.fired: list[FiredFault] = []

    @staticmethod
    def _kind(kind: str | int) -> str:
        name = str(kind)
        if name not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        return name

    def add(
        self,
        target: str,
        kind: str | int,
        *,
        times: int | None = 1,
        retry_after: int = 60,
        hold: float | None = None,
    ) -> FaultRule:
        """Fail the next ``times`` requests matching ``target`` (``None``: all of them)."""
        rule = FaultRule(target, self._kind(kind), times, retry_after, hold)
        with self._lock:
            self._rules.append(rule)
        return rule

    def random(
        self, rate: float, kinds: Iterable[str | int] = ("500", "502"), *, seed: int = 0, target: str | None = None,
        retry_after: int = 60,
    ) -> None:
        """Fail a ``rate`` share of requests (matching ``target``, if given) with one of ``kinds``
        (a kind named twice is drawn twice as often); rate limits ask for ``retry_after`` seconds.

        The draws come from ``random.Random(seed)``, so the same requests in the same order fail
        the same way.
        """
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._rng = random.Random(seed)
            self._rate = rate
            self._random_kinds = tuple(self._kind(k) for k in kinds)
            self._random_target = target
            self._random_retry_after = retry_after

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._rng = None
            self._rate = 0.0

    def pick(self, request: Request) -> FaultRule | None:
        """The fault to apply to ``request``, if any; consumes one use of a scripted rule."""
        with self._lock:
            for rule in self._rules:
                if rule.times is not None and rule.times <= 0:
                    continue
                if rule.matches(request):
                    if rule.times is not None:
                        rule.times -= 1
                    self.fired.append(FiredFault(rule.kind, request.method, request.path))
                    return rule
            if self._rng is not None and self._random_kinds:
                probe = FaultRule(self._random_target or ".*", "500", None)
                if self._random_target is None or probe.matches(request):
                    if self._rng.random() < self._rate:
                        kind = self._rng.choice(self._random_kinds)
                        self.fired.append(FiredFault(kind, request.method, request.path))
                        return FaultRule(probe.target, kind, None, self._random_retry_after)
        return None


# ---------------------------------------------------------------------------
# Schema checks


def _uri_ok(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urllib.parse.urlsplit(value)
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme not in ("http", "https"))


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _date_time_ok(value: object) -> bool:
    return not isinstance(value, str) or _DATE_TIME.match(value) is not None


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 / Swagger 2.0 schema objects to JSON Schema (draft 4): ``nullable``/``x-nullable``."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _to_json_schema(value) for key, value in node.items()}
    nullable = converted.pop("nullable", None) or converted.pop("x-nullable", None)
    if not nullable:
        return converted
    if "$ref" in converted:  # a $ref's siblings are ignored, so wrap it
        return {"anyOf": [{"$ref": converted["$ref"]}, {"type": "null"}]}
    if "type" in converted:
        kinds = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
        converted["type"] = [*kinds, "null"] if "null" not in kinds else kinds
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
        return converted
    return {"anyOf": [converted, {"type": "null"}]}


class OpenAPISchemas:
    """Validates bodies against the response schemas of an OpenAPI 3.0 or Swagger 2.0 document.

    ``$ref``s resolve inside the document; OpenAPI 3.0 ``nullable`` (and Swagger's
    ``x-nullable``) become JSON Schema null types; formats ``date-time`` and ``uri`` are
    checked (a ``uri`` must be absolute). ``extra_paths`` adds operations the document
    lacks, in the document's own form, with ``$ref``s into it.
    """

    def __init__(self, document: Mapping[str, Any], *, extra_paths: Mapping[str, Any] | None = None) -> None:
        import jsonschema  # test-only dependency, imported when schemas are used
        import referencing
        import referencing.jsonschema

        doc = copy.deepcopy(dict(document))
        if extra_paths:
            paths = dict(doc.get("paths", {}))
            for path, operations in extra_paths.items():
                paths[path] = {**paths.get(path, {}), **copy.deepcopy(dict(operations))}
            doc["paths"] = paths
        self.document = doc
        self.swagger2 = str(doc.get("swagger", "")).startswith("2")
        self._uri = "urn:emulator:openapi"
        self._converted = _to_json_schema(doc)
        resource = referencing.Resource.from_contents(
            self._converted, default_specification=referencing.jsonschema.DRAFT4
        )
        self._registry = referencing.Registry().with_resource(self._uri, resource)
        self._format_checker = jsonschema.FormatChecker(formats=())
        self._format_checker.checks("uri")(_uri_ok)
        self._format_checker.checks("date-time")(_date_time_ok)
        self._validator_class = jsonschema.Draft4Validator
        self._validators: dict[str, Any] = {}
        self._parameters: dict[str, dict[tuple[str, str], tuple[str, bool, Any]]] = {}
        self._templates = [
            (re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p))), p) for p in doc.get("paths", {})
        ]

    @classmethod
    def load(cls, path: Path, **kwargs: Any) -> OpenAPISchemas:
        """Reads a JSON document (a leading byte-order mark is allowed, as in Azure DevOps' specs)."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8-sig")), **kwargs)

    # -- looking things up

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        return self.document.get("paths", {}).get(template, {}).get(method.lower())

    def operations(self) -> list[tuple[str, str]]:
        methods = ("get", "put", "post", "patch", "delete", "head", "options")
        return [(m.upper(), p) for p, ops in self.document.get("paths", {}).items() for m in ops if m in methods]

    def template_for(self, path: str) -> str | None:
        """The document's path template matching a concrete path, preferring literal segments."""
        found = [t for regex, t in self._templates if regex.fullmatch(path)]
        return max(found, key=lambda t: len(re.sub(r"\{\w+\}", "", t))) if found else None

    def _pointer(self, *parts: str) -> str:
        return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], list[str] | None]:
        """Follows a response object's ``$ref`` (to ``#/components/responses/...``)."""
        parts = None
        while "$ref" in node:
            parts = node["$ref"].removeprefix("#/").split("/")
            node = self.document
            for part in parts:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, parts

    def response(self, method: str, template: str, status: int) -> tuple[dict[str, Any], str | None]:
        """The response object for ``status`` and the JSON pointer of its JSON body schema (``None``
        when the response has no body). Raises ``LookupError`` when the document does not describe it."""
        op = self.operation(method, template)
        if op is None:
            raise LookupError(f"{method.upper()} {template} is not in the document")
        responses = op.get("responses", {})
        for code in (str(status), f"{str(status)[0]}XX", "default"):
            if code in responses:
                break
        else:
            raise LookupError(f"{method.upper()} {template} does not describe status {status}")
        described, ref = self._resolve(responses[code])
        base = ref if ref is not None else ["paths", template, method.lower(), "responses", code]
        if self.swagger2:
            return described, (self._pointer(*base, "schema") if "schema" in described else None)
        for content_type, media in described.get("content", {}).items():
            if "json" in content_type and "schema" in media:
                return described, self._pointer(*base, "content", content_type, "schema")
        return described, None

    def describes(self, method: str, template: str, status: int) -> bool:
        try:
            self.response(method, template, status)
        except LookupError:
            return False
        return True

    # -- validating

    def _validator(self, pointer: str) -> Any:
        if pointer not in self._validators:
            self._validators[pointer] = self._validator_class(
                {"$ref": self._uri + pointer}, registry=self._registry, format_checker=self._format_checker
            )
        return self._validators[pointer]

    def validate(self, instance: Any, schema: str | Mapping[str, Any]) -> list[str]:
        """Errors of ``instance`` against a schema, given as a JSON pointer into the document
        (``"#/components/schemas/issue"``) or as a schema that may ``$ref`` into it."""
        if isinstance(schema, str):
            validator = self._validator(schema)
        else:
            wrapped = {"allOf": [_to_json_schema(dict(schema))]}
            wrapped = json.loads(json.dumps(wrapped).replace('"$ref": "#/', f'"$ref": "{self._uri}#/'))
            validator = self._validator_class(wrapped, registry=self._registry, format_checker=self._format_checker)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]

    def validate_response(
        self,
        method: str,
        template: str,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Errors of a response against the document: its body against the schema for ``status``,
        and (when ``headers`` is given) the presence of the headers the document lists, except
        ``Link``, which only paginated answers carry. Raises ``LookupError`` when undescribed."""
        described, pointer = self.response(method, template, status)
        errors: list[str] = []
        if pointer is None:
            if body not in (None, b"", ""):
                errors.append(f"(root): status {status} has no body in the document, got {str(body)[:80]!r}")
        else:
            errors.extend(self.validate(body, pointer))
        if headers is not None:
            present = {k.lower() for k in headers}
            for name in described.get("headers", {}):
                if name.lower() != "link" and name.lower() not in present:
                    errors.append(f"(headers): missing {name}")
        return errors

    # -- requests

    def _at(self, ref: str) -> Any:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _deref(self, node: Any, pointer: str) -> tuple[Any, str]:
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"]
            node = self._at(pointer)
        return node, pointer

    def variants(self, method: str, template: str) -> list[str]:
        """The keys of ``paths`` and ``x-ms-paths`` (Microsoft's specs: the same path once more per
        set of query parameters, ``/path?format={format}``) that describe ``method`` on ``template``."""
        found = [template] if self.operation(method, template) is not None else []
        found += [k for k, ops in self.document.get("x-ms-paths", {}).items()
                  if k.partition("?")[0] == template and method.lower() in ops]
        return found

    def request_parameters(self, method: str, template: str) -> dict[tuple[str, str], tuple[str, bool, Any]]:
        """The parameters the document gives an operation (the path's and the operation's):
        ``(location, name) -> (JSON pointer of the value's schema, required, schema)``; a body
        parameter (Swagger 2.0) or request body (OpenAPI 3.0) is ``("body", "")``, form fields
        ``("formData", name)``. ``template`` may be an ``x-ms-paths`` key. Raises ``LookupError``
        when the operation is undescribed."""
        key = f"{method.upper()} {template}"
        if key in self._parameters:
            return self._parameters[key]
        section = "x-ms-paths" if "?" in template else "paths"
        path_item = self.document.get(section, {}).get(template, {})
        op = path_item.get(method.lower())
        if op is None:
            raise LookupError(f"{method.upper()} {template} is not in the document")
        found: dict[tuple[str, str], tuple[str, bool, Any]] = {}
        base = [section, template]
        listed = [(self._pointer(*base, "parameters", str(i)), p) for i, p in enumerate(path_item.get("parameters", []))]
        listed += [(self._pointer(*base, method.lower(), "parameters", str(i)), p)
                   for i, p in enumerate(op.get("parameters", []))]
        for pointer, node in listed:
            param, pointer = self._deref(node, pointer)
            where, required = param.get("in", ""), bool(param.get("required"))
            if where == "body":
                found[("body", "")] = (pointer + "/schema", required, param.get("schema", {}))
            elif "schema" in param:  # OpenAPI 3.0
                found[(where, param["name"])] = (pointer + "/schema", required, param["schema"])
            else:  # Swagger 2.0: the parameter object is its own schema
                schema = {k: v for k, v in param.items() if k in _PARAMETER_SCHEMA_KEYS}
                found[(where, param["name"])] = (pointer, required, schema)
        if "requestBody" in op:
            body, pointer = self._deref(op["requestBody"], self._pointer(*base, method.lower(), "requestBody"))
            for content_type, media in body.get("content", {}).items():
                if "schema" in media:
                    found[("body", content_type)] = (pointer + "/content/" + content_type.replace("/", "~1") + "/schema",
                                                     bool(body.get("required")), media["schema"])
        self._parameters[key] = found
        return found

    def _value_validator(self, pointer: str, schema: Any) -> Any:
        """A compiled validator for a parameter's schema, cached by its pointer."""
        key = "param:" + pointer
        if key not in self._validators:
            if "$ref" in schema or pointer.endswith("/schema"):
                self._validators[key] = self._validator(pointer if "$ref" not in schema else schema["$ref"])
            else:
                wrapped = json.loads(json.dumps(_to_json_schema(dict(schema))).replace(
                    '"$ref": "#/', f'"$ref": "{self._uri}#/'))
                self._validators[key] = self._validator_class(
                    wrapped, registry=self._registry, format_checker=self._format_checker)
        return self._validators[key]

    def validate_value(self, value: Any, pointer: str, schema: Any, where: str) -> list[str]:
        """Errors of one value (a parameter's, read as its type) against ``schema`` at ``pointer``."""
        validator = self._value_validator(pointer, schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return [f"{where}{'/' if e.absolute_path else ''}{'/'.join(map(str, e.absolute_path))}: {e.message} "
                f"[schema {pointer}]" for e in errors]

    def validate_request(
        self,
        method: str,
        template: str,
        *,
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        form: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Errors of a request against the operation the document gives for it: each path and
        query parameter (query strings read as the parameter's type), a query parameter the
        document does not list, a required one missing (header parameters: presence only), the
        JSON ``body`` against the request body's schema (with a top-level field the schema does
        not list) and ``form`` fields (Swagger 2.0 ``formData``) likewise. Each error names the
        schema's JSON pointer. Raises ``LookupError`` when the operation is undescribed. With
        several ``variants``, the errors of the one the request fits best."""
        variants = self.variants(method, template)
        if not variants:
            raise LookupError(f"{method.upper()} {template} is not in the document")
        request = {"path_params": path_params, "query": query, "headers": headers, "body": body,
                   "content_type": content_type, "form": form}
        return min((self._request_errors(method, variant, **request) for variant in variants), key=len)

    def _request_errors(self, method: str, template: str, *, path_params: Mapping[str, str] | None,
                        query: Mapping[str, str] | None, headers: Mapping[str, str] | None, body: Any,
                        content_type: str | None, form: Mapping[str, Any] | None) -> list[str]:
        described = self.request_parameters(method, template)
        errors: list[str] = []
        given = {"path": dict(path_params or {}), "query": dict(query or {}),
                 "header": {k.lower(): v for k, v in (headers or {}).items()}, "formData": dict(form or {})}
        for where in ("query", "formData"):
            for name in given[where]:
                if (where, name) not in described:
                    errors.append(f"{where} {name}: not a parameter of {method.upper()} {template}")
        for (where, name), (pointer, required, schema) in described.items():
            if where == "body":
                continue
            values = given.get(where, {})
            key = name.lower() if where == "header" else name
            if key not in values:
                if required and not (where == "header" and key in ("authorization", "accept", "content-type")):
                    errors.append(f"{where} {name}: required but missing [schema {pointer}]")
                continue
            if where == "header":
                continue
            value = values[key]
            if isinstance(value, str):
                value = _coerce(value, self._deref(schema, pointer)[0], self)
            errors.extend(self.validate_value(value, pointer, schema, f"{where} {name}"))
        bodies = {ct: spec for (where, ct), spec in described.items() if where == "body"}
        if body is None:
            if any(required for _, required, _ in bodies.values()):
                errors.append(f"body: required but missing [schema {next(iter(bodies.values()))[0]}]")
            return errors
        if not bodies:
            errors.append(f"body: {method.upper()} {template} takes no body")
            return errors
        kind = (content_type or "").split(";")[0].strip().lower()
        if "" in bodies:  # Swagger 2.0: one body, whatever the media type
            pointer, _, schema = bodies[""]
        elif kind in bodies:
            pointer, _, schema = bodies[kind]
        else:
            errors.append(f"body: content type {kind or '(none)'!r} is not one of {sorted(bodies)}")
            return errors
        errors.extend(self.validate_value(body, pointer, schema, "body"))
        fields = self._fields(schema, pointer)
        if isinstance(body, dict) and fields is not None:
            errors.extend(f"body {name}: not a field of the request body [schema {pointer}]"
                          for name in body if name not in fields)
        return errors

    def _fields(self, schema: Any, pointer: str) -> set[str] | None:
        """The properties an object schema lists, through ``$ref`` and ``allOf``; None when it
        takes others too (``additionalProperties``, ``anyOf``/``oneOf``, or none listed)."""
        resolved, pointer = self._deref(schema, pointer)
        if not isinstance(resolved, dict) or "additionalProperties" in resolved or \
                "anyOf" in resolved or "oneOf" in resolved:
            return None
        fields = set(resolved.get("properties", {}))
        for part in resolved.get("allOf", []):
            more = self._fields(part, pointer)
            if more is None:
                return None
            fields |= more
        return fields or None


#: the keywords of a Swagger 2.0 parameter object that are its value's schema
_PARAMETER_SCHEMA_KEYS = frozenset((
    "type", "format", "items", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "multipleOf", "x-nullable",
))


def _coerce(value: str, schema: Any, schemas: OpenAPISchemas) -> Any:
    """A query or path string as the type its schema says (left as it is when it does not parse,
    so that validation reports it)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    try:
        if kind == "integer" and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "array":
            items, _ = schemas._deref(schema.get("items", {}), "")
            return [_coerce(part, items, schemas) for part in value.split(",")]
    except ValueError:
        return value
    return value


# ---------------------------------------------------------------------------
# The server


class _Drop:
    """Close the connection without answering."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "local-emulator/1"
    timeout = 30  # an idle keep-alive connection is closed after this long
    disable_nagle_algorithm = True  # headers and body go out separately: do not wait for ACKs
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.emulator._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        outcome = self.server.emulator._process_counted(self.command, self.path, headers, body)
        if isinstance(outcome, _Drop):
            if outcome.hold:
                self.server.emulator._stopping.wait(outcome.hold)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status, response_headers, payload = outcome
        self.send_response(status)
        for name, value in response_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: HttpEmulator


class HttpEmulator:
    """A local HTTP server playing one service. Subclasses register routes in ``__init__``.

    Each request goes: parse -> route -> fault? -> ``dispatch`` (under ``lock``) -> ``finalize``
    -> schema check (when ``schemas`` is given) -> log -> answer (or drop the connection).
    """

    #: the service's name, used in messages
    service = "service"

    #: routes (``Route.key``) the service's description lacks, each with why; their requests are not
    #: checked against it (every other route's are, and an undescribed one is a violation)
    UNDESCRIBED_ROUTES: Mapping[str, str] = {}

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "",
        clock: Clock | None = None,
        schemas: OpenAPISchemas | None = None,
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"emulators listen on loopback only, not {host!r}")
        self.host = host
        self._requested_port = port
        self.prefix = prefix.rstrip("/")
        self.clock = clock or Clock()
        self.schemas = schemas
        self.router = Router()
        self.log = RequestLog()
        self.faults = Faults()
        self.lock = threading.RLock()
        self.violations: list[str] = []  # answers outside the schemas (with ``schemas``)
        self.errors: list[str] = []  # tracebacks of handlers that raised
        self.refused: list[str] = []  # requests outside the schemas that were answered 400/422
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.in_flight = 0  # requests received and not yet answered (for concurrency limits)
        self._in_flight_lock = threading.Lock()

    # -- life cycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name=f"{self.service}-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        # shutdown() waits for the serving loop's next poll; a connection wakes it at once
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            try:
                socket.create_connection(server.server_address[:2], timeout=0.5).close()
            except OSError:
                pass
            stopper.join(0.005)
        server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_until_interrupted(self) -> None:
        """Runs in the foreground until Ctrl-C (for ``python -m``)."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {self.service} emulator is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no prefix)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``url`` + the service's prefix: what the SDK client is given."""
        return self.url + self.prefix

    # -- hooks for the service

    def route(self, method: str, template: str, handler: Handler, *, name: str | None = None) -> Route:
        return self.router.add(method, template, handler, name=name)

    def dispatch(self, request: Request) -> Response:
        """Runs the route's handler. Services wrap this with authentication, rate limits, caching."""
        assert request.route is not None
        return request.route.handler(request)

    def not_found(self, request: Request) -> Response:
        return Response(404, {"message": "Not Found"})

    def fault_response(self, rule: FaultRule, request: Request) -> Response:
        """The answer for a status or rate-limit fault; services give their own bodies."""
        if rule.kind in ("rate_limit_primary", "rate_limit_secondary", "429"):
            status = 429 if rule.kind == "429" else 403
            return Response(status, {"message": "rate limited"}, {"Retry-After": str(rule.retry_after)})
        return Response(int(rule.kind), {"message": "Server Error"})

    def finalize(self, request: Request, response: Response) -> Response:
        """Adds the headers every answer carries."""
        return response

    def identity_name(self, request: Request) -> str | None:
        return None if request.identity is None else str(request.identity)

    def request_problems(self, request: Request) -> list[str]:
        """Where a routed request departs from the service's description (``schemas``): its path,
        query and JSON body; a route outside it and not in ``UNDESCRIBED_ROUTES`` is one problem.
        Services override this for requests shaped otherwise (Slack's forms)."""
        route = request.route
        assert route is not None and self.schemas is not None
        if route.key in self.UNDESCRIBED_ROUTES:
            return []
        try:
            body = request.json()
        except ValueError:
            return ["body: not JSON"]
        try:
            return self.schemas.validate_request(
                route.method, route.template, path_params=request.params, query=request.query,
                headers=request.headers, body=body, content_type=request.header("content-type"))
        except LookupError:
            return [f"the route {route.key} is not in the description (nor in UNDESCRIBED_ROUTES)"]

    def error_problems(self, request: Request, response: Response) -> list[str]:
        """Where an error answer (4xx/5xx) that its operation does not describe departs from the
        service's general error shape; services with one override this."""
        return []

    def _check_request(self, request: Request) -> list[str]:
        if self.schemas is None or request.route is None:
            return []
        return self.request_problems(request)

    def refuses(self, response: Response) -> bool:
        """Whether ``response`` refuses the request as invalid (the service's 400 or 422)."""
        return response.status in (400, 422)

    def _report_request(self, request: Request, problems: list[str], response: Response | None) -> None:
        """A request outside the description is a violation, unless the emulator refused it as the
        service would (``refuses``: a test of that refusal): then it is kept in ``refused``."""
        if not problems or request.route is None:
            return
        found = [f"request {request.method} {request.raw_path or request.path} (route {request.route.key}): {p}"
                 for p in problems]
        (self.refused if response is not None and self.refuses(response) else self.violations).extend(found)

    def admit(self, request: Request) -> Response | None:
        """Called for a routed request before faults and ``dispatch``, outside ``lock``, with
        ``in_flight`` counting it: a service's answer for a request it refuses at the door (too
        many at once), or None to go on."""
        return None

    # -- the pipeline

    def _process_counted(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | _Drop:
        with self._in_flight_lock:
            self.in_flight += 1
        try:
            return self._process(method, raw_path, headers, body)
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1

    def _record(self, request: Request, status: int | None, charged: bool, fault: str | None) -> None:
        self.log.append(
            LoggedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                status=status,
                charged=charged,
                timestamp=datetime.now(UTC),
                body=request.logged_body(),
                route=request.route.name if request.route else None,
                fault=fault,
                identity=self.identity_name(request),
            )
        )

    def _check_schema(self, request: Request, response: Response) -> None:
        if self.schemas is None:
            return
        route = request.route
        if route is not None and self.schemas.describes(route.method, route.template, response.status):
            errors = self.schemas.validate_response(
                route.method, route.template, response.status, response.body, response.headers
            )
        elif response.status >= 400 and (route is None or route.key not in self.UNDESCRIBED_ROUTES):
            errors = self.error_problems(request, response)
        else:
            return
        self.violations.extend(f"{route.method} {request.path} -> {response.status}: {e}" for e in errors)

    def _process(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | _Drop:
        parts = urllib.parse.urlsplit(raw_path)
        path = parts.path
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        request = Request(method.upper(), path, query, headers, body, raw_path=raw_path)
        problems: list[str] = []
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            response = self.not_found(request)
        else:
            request.path = path[len(self.prefix) :] or "/"
            request.route, request.params = self.router.match(request.method, request.path)
            response = None
            if request.route is None:
                response = self.not_found(request)
            else:
                problems = self._check_request(request)
        fault = None
        if response is None:
            response = self.admit(request)
        if response is None:
            fault = self.faults.pick(request)
            if fault is not None and fault.kind == "timeout":
                self._record(request, None, False, fault.kind)
                self._report_request(request, problems, None)
                return _Drop(hold=fault.hold if fault.hold is not None else self.faults.timeout_hold)
            if fault is not None and fault.kind != "lost_response":
                with self.lock:
                    response = self.fault_response(fault, request)
            else:
                with self.lock:
                    try:
                        response = self.dispatch(request)
                    except Exception:  # a bug in the emulator: answer 500 and keep the traceback
                        self.errors.append(f"{request.method} {request.path}\n{traceback.format_exc()}")
                        response = Response(500, {"message": "emulator error (see emulator.errors)"})
        with self.lock:
            response = self.finalize(request, response)
        fault_kind = fault.kind if fault else None
        self._check_schema(request, response)  # injected faults and error answers too
        self._report_request(request, problems, response)
        if fault_kind == "lost_response":
            self._record(request, None, response.charged, fault_kind)
            return _Drop()
        self._record(request, response.status, response.charged, fault_kind)
        out_headers = {"Content-Type": response.content_type} if response.body is not None else {}
        out_headers.update(response.headers)
        return response.status, out_headers, response.payload()
