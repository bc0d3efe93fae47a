"""Counting an SDK client's HTTP requests through urllib3's ``Retry``, the one object that sees every try.

PyGithub takes a ``Retry`` as its ``retry=`` argument, and msrest (under the azure-devops client)
lets its session callback set each session's adapters' ``max_retries`` (integrations/azure_devops.py);
either way it is ``requests``' ``HTTPAdapter`` that holds it, and its connection
pool asks ``Retry.is_retry(method, status, has_retry_after)`` about every answer (a retried one
too, which no response hook of ``requests`` ever sees) and calls ``Retry.increment(error=...)``
for every try that got no answer. ``CountingRetry`` retries exactly as the ``Retry`` it copies and
tells its ``ApiCalls`` of each, so each request is counted once.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from typing import Any

from urllib3.util.retry import Retry

from integrations.ports import ApiCallObserver

__all__ = ["ApiCalls", "CountingRetry"]


class ApiCalls:
    """Where one SDK client's requests are told: the observer of the moment, if any.

    Thread-safe: the observer is one reference, replaced whole (``observe``) and read once per report.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._observer: ApiCallObserver | None = None
        self._lock = threading.Lock()

    def observe(self, observer: ApiCallObserver) -> None:
        """From now on, tell ``observer`` (and no earlier one)."""
        with self._lock:
            self._observer = observer

    def answered(self, status: int) -> None:
        observer = self._observer
        if observer is not None:
            observer.api_response(self.service, status)

    def failed(self) -> None:
        """A try that got no answer at all."""
        observer = self._observer
        if observer is not None:
            observer.api_response(self.service, "error")

    def rate_limit(self, headers: Mapping[str, str]) -> None:
        observer = self._observer
        if observer is not None and headers:
            observer.api_rate_limit(self.service, headers)


# The constructor's parameters are also the attributes it keeps them in (as ``Retry.new`` relies on).
_RETRY_SETTINGS = tuple(name for name in inspect.signature(Retry).parameters)


class CountingRetry(Retry):
    """A urllib3 ``Retry`` that retries as it is told and reports each answer and each failed try."""

    def __init__(self, *args: Any, calls: ApiCalls | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = calls

    @classmethod
    def copying(cls, retry: Retry, calls: ApiCalls) -> CountingRetry:
        """The same retry rules as ``retry`` (whoever configured it), reporting to ``calls``."""
        settings = {name: getattr(retry, name) for name in _RETRY_SETTINGS if hasattr(retry, name)}
        return cls(**settings, calls=calls)

    def new(self, **changes: Any) -> CountingRetry:
        # urllib3 makes a new Retry for every retry it counts; each must report to the same place.
        successor = super().new(**changes)
        successor.calls = self.calls
        return successor

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # Asked once about every answer the connection pool receives, retried or not.
        if self.calls is not None:
            self.calls.answered(status_code)
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, *more: Any, **options: Any) -> CountingRetry:
        # Called with ``error`` for each try without an answer (then it may raise at once, so report
        # first); with ``response`` only for an answer ``is_retry`` has reported already.
        if error is not None and response is None and self.calls is not None:
            self.calls.failed()
        return super().increment(method, url, response, error, *more, **options)
