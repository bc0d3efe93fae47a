"""Helpers the service benchmarks share: a quiet git, running a bot until its outbox is empty, percentiles."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=b@example.com", "-c", "user.name=b", *args],
                   check=True, capture_output=True)


def settle(app, rounds: int = 40) -> None:
    """Run the bot's cycle until no effect is pending; fail loudly rather than measure half the work."""
    for _ in range(rounds):
        app.run_once()
        if not app.store.effects(status="pending"):
            return
        time.sleep(0.01)
    raise RuntimeError(f"effects still pending: {[e.key for e in app.store.effects(status='pending')]}")


def quantile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99), as statistics.quantiles computes it inclusively."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]
