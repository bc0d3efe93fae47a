"""Statistical behaviour: false alarms stay under the chosen level, power grows with the shift,
and the effect floor keeps a huge batch with a negligible shift from raising an alarm."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.drift import DriftConfig, check_drift
from pipeline.profile import build_reference_profile

_LEVEL = 0.05


def _frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    """Eight features of different shapes; ``shift`` moves the first, in standard deviations."""
    return pd.DataFrame({
        "normal": rng.normal(shift, 1, rows),
        "skewed": rng.exponential(1, rows),
        "counts": rng.poisson(3, rows),  # many ties
        "uniform": rng.random(rows),
        "heavy": rng.standard_t(3, rows),
        "wide": rng.normal(1e6, 1e3, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.6, 0.3, 0.1]),
        "region": rng.choice(list("abcdefgh"), rows),
    })


def _binomial_slack(rate: float, trials: int) -> float:
    """One-sided 99% allowance for an observed rate whose true value is ``rate``."""
    return 2.33 * math.sqrt(rate * (1 - rate) / trials)


def test_false_alarm_rate_without_shift_stays_at_the_level():
    seeds = 400
    any_test_rejected = dataset_alarms = feature_alarms = 0
    marginal_rejections = np.zeros(8)
    config = DriftConfig(fdr_level=_LEVEL, multivariate=False)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        profile = build_reference_profile(_frame(rng, 2_000), model="m", seed=seed)
        report = check_drift(profile, _frame(rng, 1_000), config=config)
        adjusted = np.array([f.p_value_adjusted for f in report.features])
        any_test_rejected += bool((adjusted <= _LEVEL).any())  # the bare tests, no effect floor
        marginal_rejections += np.array([f.p_value for f in report.features]) <= _LEVEL
        feature_alarms += any(f.drifted for f in report.features)
        dataset_alarms += report.drifted
    family_rate = any_test_rejected / seeds
    print(f"\nno shift, {seeds} seeds: BH family-wise rejection rate {family_rate:.3f} (level {_LEVEL}); "
          f"per-test rejection rates {np.round(marginal_rejections / seeds, 3).tolist()}; "
          f"features flagged with the effect floor {feature_alarms / seeds:.3f}; dataset alarms {dataset_alarms}")
    # Under no shift at all, Benjamini-Hochberg's FDR is its family-wise error rate: at most the level.
    assert family_rate <= _LEVEL + _binomial_slack(_LEVEL, seeds)
    assert (marginal_rejections / seeds <= _LEVEL + _binomial_slack(_LEVEL, seeds)).all()
    assert feature_alarms / seeds <= _LEVEL
    assert dataset_alarms == 0


def test_power_to_detect_known_shifts_is_reported():
    """Detection rate of a mean shift (in reference standard deviations) on 2,000 batch rows."""
    seeds = 40
    table = {}
    for shift in (0.05, 0.1, 0.2, 0.3, 0.5):
        detected = significant = 0
        for seed in range(seeds):
            rng = np.random.default_rng(1_000 + seed)
            profile = build_reference_profile(_frame(rng, 20_000), model="m", seed=seed)
            report = check_drift(profile, _frame(rng, 2_000, shift=shift), config=DriftConfig(multivariate=False))
            normal = report.features[0]
            detected += normal.drifted
            significant += normal.p_value_adjusted <= _LEVEL
        table[shift] = (significant / seeds, detected / seeds)
    print("\nshift (sd) | test significant | drifted (test and effect floor 0.1)")
    for shift, (significant_rate, detected_rate) in table.items():
        print(f"{shift:10.2f} | {significant_rate:16.2f} | {detected_rate:.2f}")
    assert table[0.05][1] <= 0.1  # below the effect floor by design; noise on 2,000 rows can reach it
    assert table[0.2][1] >= 0.95 and table[0.3][1] == 1 and table[0.5][1] == 1
    assert table[0.1][0] >= 0.8  # the test itself sees a 0.1 sd shift; the floor decides
    detected_rates = [rate for _, rate in table.values()]
    assert detected_rates == sorted(detected_rates)


@pytest.mark.slow
def test_effect_floor_silences_a_trivial_shift_on_ten_million_rows():
    rows = 10_000_000
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"trivial": rng.normal(0, 1, rows), "real": rng.normal(0, 1, rows)})
    # The whole reference is the sample, so the KS test runs on 10M against 10M rows.
    profile = build_reference_profile(reference, model="m", sample_size=rows)
    del reference
    current = pd.DataFrame({"trivial": rng.normal(0.02, 1, rows), "real": rng.normal(0.3, 1, rows)})
    report = check_drift(profile, current, config=DriftConfig(key_features=("trivial",)))
    trivial, real = report.features
    assert trivial.p_value < 1e-100  # a p-value alone would raise the alarm...
    assert trivial.statistics["psi"]["value"] < 0.01
    assert not trivial.drifted  # ...the effect floor does not
    assert any("below the floor" in finding for finding in trivial.findings)
    assert real.drifted and real.severity == "medium"
    assert report.multivariate is not None and not report.multivariate.drifted
