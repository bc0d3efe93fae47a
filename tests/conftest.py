from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "breast_cancer"


class FakeClock:
    """Time that moves only when told to, one second per reading by default."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC), step: timedelta = timedelta(seconds=1)):
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A private copy of the bundled example, so a test may change it."""
    target = tmp_path / "breast_cancer"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def write_project(root: Path, toml: str, frame: pd.DataFrame | None = None, *, data_name: str = "data.csv") -> Path:
    """A model project folder with the given mlops.toml and (optionally) data file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlops.toml").write_text(textwrap.dedent(toml))
    if frame is not None:
        path = root / data_name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    return root


def tiny_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small, learnable classification table with a categorical column and missing values."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    logit = 2.0 * x1 - 1.5 * x2 + np.where(colour == "red", 1.0, -0.5)
    label = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": label})
    frame.loc[rng.random(rows) < 0.05, "x2"] = np.nan
    return frame


TINY_TOML = """
    [project]
    name = "tiny"

    [data]
    path = "data.csv"
    target = "label"

    [model]
    estimator = "sklearn.linear_model.LogisticRegression"

    [metrics]
    primary = "roc_auc"
    others = ["accuracy"]

    [gates]
    max_regression = 0.02
"""


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "tiny", TINY_TOML, tiny_frame())
