"""Write a "production" batch drawn from the example's data, with a chosen amount of shift.

Rows are resampled from the training data; ``--shift`` moves the size features (radius, perimeter
and area: a scanner that reads sizes larger) by that many of their standard deviations and tilts
the clinic mix towards 'west', so a monitor has something to find, and a model trained before the
shift takes benign scans for malignant ones. ``--shift 0`` gives a batch from the same distribution
(no drift expected).

Every row has a ``scan_id`` (the project's ``[data] id_column``), unique across batches: the
output's file name and the row number. Labels (the true diagnosis) come one of two ways, as they
do in production: ``--labels`` keeps them in the batch (a labelled batch), ``--label-file PATH``
writes them to a separate file of ``scan_id,diagnosis`` to drop into the labels folder later
(late labels, joined to the batch by id).

    python examples/breast_cancer/make_batch.py --shift 1.0 --output .mlops/batches/batch-001.csv
    python examples/breast_cancer/make_batch.py --shift 1.5 --output .mlops/batches/batch-002.csv \
        --label-file .mlops/labels/batch-002-labels.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
# A new scanner that reads every size larger: radius, perimeter and area, as means, errors and worst values.
SHIFTED = tuple(f"{kind}_{size}" for kind in ("mean", "worst") for size in ("radius", "perimeter", "area")) + (
    "radius_error", "perimeter_error", "area_error")


ID_COLUMN, TARGET = "scan_id", "diagnosis"


def make_batch(rows: int, shift: float, seed: int, *, labels: bool, id_prefix: str = "scan") -> pd.DataFrame:
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
    batch.insert(0, ID_COLUMN, [f"{id_prefix}-{row:05d}" for row in range(1, rows + 1)])
    return batch if labels else batch.drop(columns=[TARGET])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500, help="rows in the batch (default 500)")
    parser.add_argument("--shift", type=float, default=0.0, help="shift in standard deviations (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--labels", action="store_true", help="keep the diagnosis column in the batch (a labelled batch)")
    parser.add_argument("--label-file", type=Path, help="also write the batch's labels (scan_id,diagnosis) to this "
                        "file, for the labels folder (late labels); the batch itself then has none")
    parser.add_argument("--output", type=Path, required=True, help="CSV or Parquet file to write")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.labels and args.label_file:
        parser.error("choose --labels (labels in the batch) or --label-file (labels on their own), not both")
    batch = make_batch(args.rows, args.shift, args.seed, labels=True, id_prefix=args.output.stem)
    if args.label_file:
        _write(batch[[ID_COLUMN, TARGET]], args.label_file)
        print(f"wrote {len(batch)} labels to {args.label_file}")
    if not args.labels:
        batch = batch.drop(columns=[TARGET])
    _write(batch, args.output)
    print(f"wrote {len(batch)} rows with shift {args.shift:g}{' and labels' if args.labels else ''} to {args.output}")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
