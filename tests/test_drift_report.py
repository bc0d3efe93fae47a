"""The report as people and programs read it: stable JSON, Markdown for tickets, a PNG for chat."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.drift import REPORT_SCHEMA_VERSION, DriftConfig, check_drift
from pipeline.profile import build_reference_profile


def _frame(rows: int, seed: int, shifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40 + 8 * shifted, 10, rows),
        "income": rng.lognormal(10, 1, rows),
        "visits": rng.poisson(3 + shifted, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2]),
        "channel|web": rng.choice(["web", "app"], rows),
    })
    if shifted:
        frame.loc[: rows // 10, "income"] = np.nan
        frame.loc[0, "plan"] = "enterprise"
    return frame


@pytest.fixture(scope="module")
def report():
    profile = build_reference_profile(_frame(10_000, 0, shifted=False), model="churn")
    return check_drift(profile, _frame(5_000, 1, shifted=True))


def test_json_document_has_a_version_the_verdict_and_every_feature(report):
    document = json.loads(report.to_json())
    assert document["schema"] == "mlops-bot/drift-report"
    assert document["schema_version"] == REPORT_SCHEMA_VERSION
    assert list(document)[:4] == ["schema", "schema_version", "drifted", "severity"]
    assert document["drifted"] is True and document["severity"] in ("low", "medium", "high")
    assert [f["name"] for f in document["features"]] == ["age", "income", "visits", "plan", "channel|web"]
    for feature in document["features"]:
        assert set(feature) >= {"name", "kind", "drifted", "severity", "statistics", "reference", "current"}
        assert isinstance(feature["drifted"], bool)
        assert all("value" in statistic for statistic in feature["statistics"].values())
    age = document["features"][0]
    assert set(age["statistics"]) == {"ks", "psi", "wasserstein", "missing_rate"}
    assert document["features"][3]["statistics"]["new_categories"]["value"] == 1
    assert document["features"][1]["statistics"]["missing_rate"]["current"] == pytest.approx(0.1002)
    assert document["summary"]["drifted_names"][0] == "age"
    assert document["multivariate"]["auc"] > 0.6
    assert document["config"] == DriftConfig().to_dict()


def test_json_is_strict_and_identical_on_a_rerun(report):
    first = report.to_dict()
    json.dumps(first, allow_nan=False)
    rerun = check_drift(build_reference_profile(_frame(10_000, 0, shifted=False), model="churn"),
                        _frame(5_000, 1, shifted=True)).to_dict()
    for document in (first, rerun):
        document.pop("created_at")
        document["reference"].pop("profile_created_at")
    assert first == rerun


def test_markdown_leads_with_the_verdict_and_sorts_drifted_features_by_effect(report):
    text = report.to_markdown(link="https://example.org/run/7")
    lines = text.splitlines()
    assert lines[0].startswith("### Drift detected: severity **")
    assert "[full report](https://example.org/run/7)" in text
    rows = [line for line in lines if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [f.name for f in report.drifted_features]
    assert "| Feature | Severity | Test | Statistic | p-value (BH) | PSI | Distance | Reference | Current |" in text
    assert "never seen in the reference: 'enterprise'" in text
    assert "**Domain classifier:** AUC" in text


def test_markdown_without_drift_is_short():
    profile = build_reference_profile(_frame(5_000, 0, shifted=False), model="churn")
    text = check_drift(profile, _frame(2_000, 2, shifted=False), config=DriftConfig(multivariate=False)).to_markdown()
    assert text.startswith("### No drift: severity **none**")
    assert "| Feature |" not in text


def test_write_produces_json_markdown_and_png(report, tmp_path):
    report.write(tmp_path / "out")
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["report.json", "report.md", "report.png"]
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["drifted"] is True


def test_png_without_any_distribution(tmp_path):
    profile = build_reference_profile(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), model="m")
    report = check_drift(profile, pd.DataFrame({"y": [1.0]}).assign(x=np.nan), config=DriftConfig(multivariate=False))
    report.write_png(tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_importing_the_engine_does_not_import_matplotlib():
    code = "import sys, pipeline.drift, pipeline.drift_report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
