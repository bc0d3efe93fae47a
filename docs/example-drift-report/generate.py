"""Regenerate the example drift report in this folder.

    /work/venv/bin/python docs/example-drift-report/generate.py

A churn model is packaged with a reference profile; a month later its batch has drifted:
prices went up, support calls rose, a plan was promoted, a new payment method appeared,
the age field broke for a tenth of the rows, and the labels say the model got worse.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.drift import check_drift
from pipeline.profile import build_reference_profile

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "age", "data_gb"]
CATEGORICAL = ["plan", "region", "payment_method"]


def customers(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plans = ["basic", "plus", "pro", "family"]
    frame = pd.DataFrame({
        "tenure_months": rng.gamma(2.0, 14.0, rows).round(),
        "monthly_charges": rng.normal(62 + (9 if drifted else 0), 18, rows).clip(10).round(2),
        "support_calls": rng.poisson(1.6 if drifted else 1.1, rows),
        "age": rng.normal(44, 13, rows).clip(18, 90).round(),
        "data_gb": rng.lognormal(2.3, 0.7, rows).round(1),
        "plan": rng.choice(plans, rows, p=[0.25, 0.25, 0.4, 0.1] if drifted else [0.4, 0.3, 0.2, 0.1]),
        "region": rng.choice(["north", "south", "east", "west"], rows, p=[0.3, 0.3, 0.2, 0.2]),
        "payment_method": rng.choice(["card", "debit", "invoice", "wallet"], rows,
                                     p=[0.45, 0.25, 0.2, 0.1] if drifted else [0.5, 0.3, 0.2, 0.0]),
    })
    if drifted:
        frame.loc[rng.random(rows) < 0.1, "age"] = np.nan  # a form change dropped the field for some
    logit = (-1.2 - 0.035 * frame["tenure_months"] + 0.025 * (frame["monthly_charges"] - 60)
             + 0.45 * frame["support_calls"] + 0.4 * (frame["plan"] == "basic"))
    if drifted:  # a competitor's offer: customers leave for reasons the model never saw
        logit = logit + 2.5 * (frame["region"] == "south") - 0.6
    frame["churned"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def main() -> None:
    reference = customers(50_000, seed=1, drifted=False)
    batch = customers(20_000, seed=2, drifted=True)
    features = NUMERIC + CATEGORICAL
    encode = ColumnTransformer([("numbers", StandardScaler(), NUMERIC[:3] + NUMERIC[4:]),
                                ("labels", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)])
    model = make_pipeline(encode, LogisticRegression(max_iter=1_000))
    model.fit(reference[features], reference["churned"])
    scores = model.predict_proba(reference[features])[:, 1]
    profile = build_reference_profile(reference[features], model="churn-v3", predictions=scores,
                                      target=reference["churned"], primary_metric="roc_auc",
                                      metric_value=roc_auc_score(reference["churned"], scores))
    report = check_drift(profile, batch, model=model, target="churned", model_name="churn-v3")
    here = Path(__file__).parent
    report.write(here, link="report.json")
    print(report.to_markdown())


if __name__ == "__main__":
    main()
