"""Where batches come from: CSV and Parquet files, folders and globs, and Parquet read in
column groups or row chunks so that a batch larger than memory is never loaded whole."""

import numpy as np
import pandas as pd
import pytest

from pipeline.drift import DriftConfig, check_drift
from pipeline.monitor import open_batch
from pipeline.profile import build_reference_profile


def _frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a": rng.normal(shift, 1, rows),
        "b": rng.exponential(1, rows).astype(np.float32),
        "c": rng.integers(0, 50, rows),
        "d": rng.choice(["x", "y", "z"], rows),
        "e": rng.random(rows) < 0.3,
    })
    frame.loc[::97, "a"] = np.nan
    frame.loc[::89, "d"] = None
    return frame


@pytest.fixture(scope="module")
def profile():
    return build_reference_profile(_frame(20_000, 0), model="m", sample_size=5_000)


@pytest.fixture(scope="module")
def batch():
    return _frame(30_000, 1, shift=0.3)


def _statistics(report):
    return [(f.name, f.statistic, f.p_value, f.statistics.get("psi", {}).get("value"), f.drifted)
            for f in report.features]


def test_parquet_in_column_groups_and_row_chunks_matches_memory(profile, batch, tmp_path):
    path = tmp_path / "batch.parquet"
    batch.to_parquet(path, row_group_size=4_000)
    config = DriftConfig(multivariate=False)
    in_memory = check_drift(profile, batch, config=config)
    whole = check_drift(profile, path, config=config)
    groups = check_drift(profile, path, config=DriftConfig(multivariate=False, memory_budget_bytes=300_000))
    chunks = check_drift(profile, path, config=DriftConfig(multivariate=False, memory_budget_bytes=50_000))
    assert _statistics(whole) == _statistics(in_memory)
    assert _statistics(groups) == _statistics(in_memory)
    for streamed, exact in zip(chunks.features, in_memory.features):
        assert streamed.statistic == exact.statistic and streamed.p_value == exact.p_value
        assert streamed.drifted == exact.drifted
        if "wasserstein" in exact.statistics:
            bound = streamed.statistics["wasserstein"].get("error_bound", 0.0)
            gap = streamed.statistics["wasserstein"]["value"] - exact.statistics["wasserstein"]["value"]
            assert abs(gap) <= bound + 1e-9


def test_column_groups_stay_within_the_budget(batch, tmp_path):
    path = tmp_path / "batch.parquet"
    batch.to_parquet(path)
    source = open_batch(path)
    groups = [list(group) for group in source.column_groups(source.columns, budget_bytes=300_000)]
    assert sum(groups, []) == source.columns and len(groups) > 1
    chunks = list(source.rows_of("a", budget_bytes=50_000))
    assert sum(len(chunk) for chunk in chunks) == len(batch) and len(chunks) > 1


def test_folders_and_globs_are_one_batch(profile, batch, tmp_path):
    for index, start in enumerate(range(0, len(batch), 10_000)):
        batch.iloc[start:start + 10_000].to_parquet(tmp_path / f"part-{index}.parquet")
    whole = check_drift(profile, batch, config=DriftConfig(multivariate=False))
    folder = check_drift(profile, tmp_path, config=DriftConfig(multivariate=False))
    pattern = check_drift(profile, str(tmp_path / "part-*.parquet"), config=DriftConfig(multivariate=False))
    assert folder.current["rows"] == pattern.current["rows"] == len(batch)
    assert _statistics(folder) == _statistics(whole) == _statistics(pattern)


def test_csv_batches(profile, batch, tmp_path):
    batch.to_csv(tmp_path / "batch.csv", index=False)
    report = check_drift(profile, tmp_path / "batch.csv", config=DriftConfig(multivariate=False))
    whole = check_drift(profile, batch, config=DriftConfig(multivariate=False))
    assert [f.kind for f in report.features] == [f.kind for f in whole.features]
    for from_csv, in_memory in zip(report.features, whole.features):
        assert from_csv.statistic == pytest.approx(in_memory.statistic, abs=1e-6)
        assert from_csv.drifted == in_memory.drifted
