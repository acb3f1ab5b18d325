"""Bootstrap intervals of ROC-AUC: the weighted-AUC shortcut of `trustml.evaluate.bootstrap` beside `roc_auc` on each resample.

    python benchmarks/bootstrap_speed.py [--rows 450000] [--customers 150000] [--scores 5] [--draws 30]

Synthetic labels (5% churners) and scores, rows grouped into customers (a customer's rows move together),
the same seeded resamples for both ways. Prints seconds for each and the largest difference between their
draws, and ends with one JSON line of the same figures.
"""

import argparse
import json
import time

import numpy as np

from trustml.evaluate import bootstrap, roc_auc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=450_000)
    p.add_argument("--customers", type=int, default=150_000)
    p.add_argument("--scores", type=int, default=5)
    p.add_argument("--draws", type=int, default=30)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    y = (rng.random(a.rows) < 0.05).astype(int)
    scores = {f"model_{i}": rng.random(a.rows) + 0.2 * y for i in range(a.scores)}
    groups = rng.integers(0, a.customers, a.rows)
    t = time.perf_counter()
    fast = bootstrap(y, scores, groups=groups, n_boot=a.draws, seed=0)
    shortcut = time.perf_counter() - t
    t = time.perf_counter()
    slow = bootstrap(y, scores, groups=groups, n_boot=a.draws, seed=0, metric=lambda yy, pp: roc_auc(yy, pp))
    per_resample = time.perf_counter() - t
    diff = max(float(np.abs(fast[k] - slow[k]).max()) for k in scores)
    print(f"{a.rows:,} rows, {a.scores} scores, {a.draws} draws: shortcut {shortcut:.2f} s, roc_auc per resample "
          f"{per_resample:.2f} s ({per_resample / shortcut:.1f}x); largest difference between draws {diff:.1e}")
    print(json.dumps({"benchmark": "bootstrap_speed", "rows": a.rows, "scores": a.scores, "draws": a.draws,
                      "shortcut_s": round(shortcut, 3), "per_resample_s": round(per_resample, 3), "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
