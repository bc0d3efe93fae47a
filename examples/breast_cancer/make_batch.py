"""Write a "production" batch drawn from the example's data, with a chosen amount of shift.

Rows are resampled from the training data; ``--shift`` moves the size features by that many of
their standard deviations and tilts the clinic mix towards 'west', so a monitor has something to
find. ``--shift 0`` gives a batch from the same distribution (no drift expected).

    python examples/breast_cancer/make_batch.py --shift 1.0 --output .mlops/batches/batch-001.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SHIFTED = ("mean_radius", "mean_perimeter", "mean_area", "worst_radius", "worst_area", "mean_concavity")


def make_batch(rows: int, shift: float, seed: int, *, labels: bool) -> pd.DataFrame:
    source = pd.read_csv(HERE / "data" / "train.csv")
    rng = np.random.default_rng(seed)
    batch = source.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    numeric = batch.select_dtypes("number").columns
    # A little noise so that resampled rows are not exact copies of training rows.
    batch[numeric] = batch[numeric] * rng.normal(1.0, 0.01, size=(rows, len(numeric)))
    for column in SHIFTED:
        batch[column] = batch[column] + shift * source[column].std()
    if shift:
        moved = rng.random(rows) < min(0.6, 0.3 * shift)
        batch.loc[moved, "clinic"] = "west"
    return batch if labels else batch.drop(columns=["diagnosis"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500, help="rows in the batch (default 500)")
    parser.add_argument("--shift", type=float, default=0.0, help="shift in standard deviations (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--labels", action="store_true", help="keep the diagnosis column (for performance drift)")
    parser.add_argument("--output", type=Path, required=True, help="CSV or Parquet file to write")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    batch = make_batch(args.rows, args.shift, args.seed, labels=args.labels)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix.lower() in {".parquet", ".pq"}:
        batch.to_parquet(args.output, index=False)
    else:
        batch.to_csv(args.output, index=False, float_format="%.6g")
    print(f"wrote {len(batch)} rows with shift {args.shift:g} to {args.output}")


if __name__ == "__main__":
    main()
