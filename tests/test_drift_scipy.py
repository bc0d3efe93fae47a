"""The engine's statistics agree with SciPy's on the same samples, over many random cases."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial.distance import jensenshannon

from pipeline.drift import DriftConfig, _kolmogorov_sf, _ks, _NumericReference, _sorted_current, _StreamingNumeric, check_drift
from pipeline.profile import build_reference_profile

# SciPy's own exact p-value sometimes falls back to its asymptotic one, and says so; its
# asymptotic formula divides by zero for one value against one.
pytestmark = [pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered in divide:RuntimeWarning")]

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CONFIG = DriftConfig(multivariate=False)


def _finite(size):
    return hnp.arrays(np.float64, size, elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False,
                                                             allow_subnormal=False))


def _tied(size):  # few distinct values: the ties are where ECDF code usually goes wrong
    return hnp.arrays(np.float64, size, elements=st.integers(-4, 4).map(float))


_samples = st.one_of(_finite(st.integers(1, 300)), _tied(st.integers(1, 300)))


def _feature(reference, current):
    """Run the whole check on one column; the profile's sample is the whole reference."""
    profile = build_reference_profile(pd.DataFrame({"x": reference}), model="m", sample_size=max(len(reference), 1))
    return check_drift(profile, pd.DataFrame({"x": current}), config=_CONFIG).features[0]


def _prepared(reference, current, streamed=False):
    profile = build_reference_profile(pd.DataFrame({"x": reference}), model="m", sample_size=len(reference))
    prepared = _NumericReference.build(profile.features[0], profile.sample["x"])
    if streamed:
        accumulator = _StreamingNumeric(prepared)
        for chunk in np.array_split(current, 3):
            accumulator.add(chunk)
        return prepared, accumulator.result(current)
    return prepared, _sorted_current(prepared, current)


@_SETTINGS
@given(reference=_samples, current=_samples)
def test_ks_matches_scipy_end_to_end(reference, current):
    expected = stats.ks_2samp(reference, current)
    feature = _feature(reference, current)
    assert feature.test == "ks"
    assert feature.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)


@_SETTINGS
@given(reference=_samples, current=_samples)
def test_ks_asymptotic_path_matches_scipy(reference, current):
    prepared, summary = _prepared(reference, current)
    summary.exact_values = None  # force the large-sample path on small samples
    statistic, p_value = _ks(prepared, summary)
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-9)
    if np.isnan(expected.pvalue):  # SciPy's formula is undefined for one value against one
        assert len(reference) == len(current) == 1 and p_value == 1.0
    else:
        assert p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)


@_SETTINGS
@given(reference=_samples, current=_samples)
def test_streamed_counts_give_the_same_ks(reference, current):
    prepared, sorted_summary = _prepared(reference, current)
    sorted_summary.exact_values = None
    _, streamed_summary = _prepared(reference, current, streamed=True)
    assert _ks(prepared, streamed_summary) == _ks(prepared, sorted_summary)
    np.testing.assert_array_equal(streamed_summary.psi_counts, sorted_summary.psi_counts)


@_SETTINGS
@given(reference=_samples, current=_samples)
def test_wasserstein_matches_scipy(reference, current):
    expected = stats.wasserstein_distance(reference, current)
    _, summary = _prepared(reference, current)
    assert summary.wasserstein == pytest.approx(expected, rel=1e-9, abs=1e-9)
    _, streamed = _prepared(reference, current, streamed=True)
    assert abs(streamed.wasserstein - expected) <= streamed.wasserstein_error + 1e-9 * (1 + expected)


@settings(max_examples=300, deadline=None)
@given(n=st.one_of(st.integers(1, 400), st.integers(141, 600_000)),
       nxsquared=st.one_of(st.floats(0.001, 400), st.floats(2.1, 372)))
def test_kolmogorov_tail_matches_scipy(n, nxsquared):
    """The engine's own sum for clearly drifted features agrees with scipy.stats.kstwo."""
    statistic = min((nxsquared / n) ** 0.5, 1.0)
    expected = stats.kstwo.sf(statistic, n)
    assert _kolmogorov_sf(statistic, n) == pytest.approx(expected, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("seed", range(12))
def test_large_samples_match_scipy(seed):
    """Past 10,000 values SciPy switches to the asymptotic p-value; so does the engine."""
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 3 == 0 else np.float64
    reference = rng.normal(0, 1, 12_000 + seed * 500).astype(dtype)
    current = rng.normal(0.02 * seed, 1 + 0.01 * seed, 40_000).astype(dtype)
    if seed % 4 == 1:  # heavy ties
        reference, current = np.round(reference, 1), np.round(current, 1)
    feature = _feature(reference, current)
    expected = stats.ks_2samp(reference, current)
    assert feature.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert feature.statistics["wasserstein"]["value"] == pytest.approx(
        stats.wasserstein_distance(reference.astype(np.float64), current.astype(np.float64)), rel=1e-7)


def test_missing_and_infinite_values_are_left_out_as_scipy_would_need():
    rng = np.random.default_rng(3)
    reference, current = rng.normal(size=500), rng.normal(0.3, 1, 400)
    dirty = current.copy()
    dirty[::10] = np.nan
    dirty[5::50] = np.inf
    clean = dirty[np.isfinite(dirty)]
    feature = _feature(reference, dirty)
    assert feature.statistic == pytest.approx(stats.ks_2samp(reference, clean).statistic, abs=1e-12)
    assert feature.current["missing_rate"] == pytest.approx(np.mean(~np.isfinite(dirty)))


_counts = st.lists(st.integers(0, 400), min_size=1, max_size=8)


@_SETTINGS
@given(reference_counts=_counts, current_counts=_counts)
def test_categorical_statistics_match_scipy(reference_counts, current_counts):
    size = max(len(reference_counts), len(current_counts))
    reference_counts = reference_counts + [0] * (size - len(reference_counts))
    current_counts = current_counts + [0] * (size - len(current_counts))
    if sum(reference_counts) == 0 or sum(current_counts) == 0:
        return
    labels = [f"c{i}" for i in range(size)]
    reference = pd.DataFrame({"c": np.repeat(labels, reference_counts)})
    current = pd.DataFrame({"c": np.repeat(labels, current_counts)})
    profile = build_reference_profile(reference, model="m")
    feature = check_drift(profile, current, config=_CONFIG).features[0]

    table = np.array([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]
    expected = stats.chi2_contingency(table)
    assert feature.test == "chi2"
    assert feature.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert feature.statistics["jensen_shannon"]["value"] == pytest.approx(
        jensenshannon(table[0], table[1], base=2), abs=1e-9)
    ref_share = np.maximum(table[0] / table[0].sum(), 1e-4)
    cur_share = np.maximum(table[1] / table[1].sum(), 1e-4)
    assert feature.statistics["psi"]["value"] == pytest.approx(
        np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)), rel=1e-9, abs=1e-12)
    unseen = [i for i in range(size) if reference_counts[i] == 0 and current_counts[i] > 0]
    assert ("new_categories" in feature.statistics) == bool(unseen)


def test_numeric_psi_uses_the_reference_deciles():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=100_000), rng.normal(0.5, 1, 50_000)
    feature = _feature(reference, current)
    edges = np.quantile(reference, np.linspace(0.1, 0.9, 9))
    ref_share = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=10) / reference.size
    cur_share = np.bincount(np.searchsorted(edges, current, side="left"), minlength=10) / current.size
    expected = np.sum((cur_share - ref_share) * np.log(cur_share / ref_share))
    assert feature.statistics["psi"]["value"] == pytest.approx(expected, rel=1e-9)
