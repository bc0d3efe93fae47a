"""Write data/train.csv from scikit-learn's bundled breast cancer dataset (no download).

The columns get plain names, and two things real tables have are added so the default pipeline
shows what it does with them: a categorical column (the clinic a scan came from) and a few
missing values. Deterministic: running it again writes the same file.

    python examples/breast_cancer/prepare_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
CLINICS = np.array(["north", "south", "east", "west"])


def source_frame(seed: int = 7) -> pd.DataFrame:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=lambda name: name.replace(" ", "_"))
    rng = np.random.default_rng(seed)
    frame["clinic"] = CLINICS[rng.choice(len(CLINICS), size=len(frame), p=[0.4, 0.3, 0.2, 0.1])]
    for column in ("mean_texture", "worst_smoothness"):
        frame.loc[rng.random(len(frame)) < 0.02, column] = np.nan
    frame["diagnosis"] = np.where(bunch.target == 1, "benign", "malignant")
    return frame


def main() -> None:
    target = HERE / "data" / "train.csv"
    target.parent.mkdir(exist_ok=True)
    source_frame().to_csv(target, index=False, float_format="%.6g")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
