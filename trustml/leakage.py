"""A leakage guard: features that know the answer before the model is trained.

A churn reason that exists only for churners, a status exported after the fact, a "last
activity" column taken on the export date: each can score a perfect ROC-AUC and teach the
model nothing it can use. Before training, every feature is checked alone:

* **value**: its ROC-AUC for the label (categories by out-of-fold churn rate, so a category
  seen once cannot look perfect), in the direction that separates best;
* **missingness**: the ROC-AUC of "is this value missing" for the label;
* **eventual churn** (snapshots over time): the same two checks against whether the customer
  *ever* churns in the data. A point-in-time feature cannot know that; an attribute exported
  at the end (a status, a cancellation reason) does.

A feature whose best ROC-AUC reaches `threshold` (default 0.98) is flagged with its evidence.
`train(leakage="warn")` records the flags in the model card and reports print them first;
`leakage="refuse"` stops training.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> frame = pl.DataFrame({"customer_id": [str(i) for i in range(400)], "churned": y,
...                       "usage": rng.normal(size=400) - y,
...                       "churn_reason": [("price" if rng.random() < .5 else "service") if v else None for v in y]})
>>> from trustml.features import Feature, FeatureRegistry
>>> reg = FeatureRegistry((Feature("usage", "engagement", "", "", False, None, 0, False),
...                        Feature("churn_reason", "other", "", "category", False, None, 0, True)))
>>> check_leakage(frame, reg)["feature"].to_list()
['churn_reason']
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import rankdata

from trustml.features import FeatureRegistry

__all__ = ["check_leakage", "LEAK_THRESHOLD", "LEAK_MAX_ROWS", "describe_leaks"]

LEAK_THRESHOLD = 0.98
LEAK_MAX_ROWS = 500_000   # rows checked at most: beyond, a seeded sample of whole customers (a leak shows on any sample)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC in the direction that separates best (0.5 when one class or a constant score): the Mann-Whitney
    statistic from average ranks (ties count half), as `sklearn.metrics.roc_auc_score` gives, in one sort.

    >>> round(_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4), _auc(np.array([0, 1]), np.array([2.0, 2.0]))
    (0.75, 0.5)
    """
    if y.min() == y.max() or np.all(score == score[0]):
        return 0.5
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    a = float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    return max(a, 1.0 - a)


def _score(s: pl.Series, y: np.ndarray, seed: int) -> np.ndarray:
    """A numeric score from one feature: the value itself, or a category's out-of-fold churn rate."""
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        x = s.cast(pl.Float64).to_numpy()
        return np.where(np.isnan(x), np.nanmin(x) - 1 if np.isfinite(x).any() else 0.0, x)
    codes = s.cast(pl.String).fill_null("<missing>").to_numpy()
    fold = np.random.default_rng(seed).integers(0, 2, len(codes))
    out = np.full(len(codes), y.mean())
    for k in (0, 1):
        fit = fold != k
        rates = pl.DataFrame({"c": codes[fit], "y": y[fit]}).group_by("c").agg(pl.col("y").mean())
        held = pl.DataFrame({"c": codes[~fit]}).join(rates, on="c", how="left", maintain_order="left")
        out[~fit] = held["y"].fill_null(float(y[fit].mean())).to_numpy()
    return out


def check_leakage(frame: pl.DataFrame, registry: FeatureRegistry, *, per_customer: bool = False,
                  threshold: float = LEAK_THRESHOLD, seed: int = 0, max_rows: int = LEAK_MAX_ROWS) -> pl.DataFrame:
    """Features that alone (or by being missing) separate churners almost perfectly, with the evidence.

    `frame`: labelled rows (`churned`, features; `customer_id` for `per_customer`); beyond `max_rows`, a seeded
    sample of whole customers (`trustml.model.sample_customers`) is checked. Returns one row per flagged feature:
    feature, check, roc_auc, evidence (empty when nothing is suspicious).
    """
    lab = frame.filter(pl.col("churned").is_not_null())
    if lab.height > max_rows and "customer_id" in lab.columns:
        from trustml.model import sample_customers
        lab = sample_customers(lab, max_rows, seed)[0]
    y = lab["churned"].cast(pl.Int64).to_numpy()
    targets = {"label": y}
    if per_customer and "customer_id" in lab.columns:
        targets["eventual churn"] = lab.select(pl.col("churned").max().over("customer_id"))["churned"].cast(pl.Int64).to_numpy()
    rows = []
    for name in registry.names:
        s = lab[name]
        checks = {}
        for target, t in targets.items():
            checks[f"value vs {target}"] = _auc(t, _score(s, t, seed))
            if s.null_count():
                checks[f"missingness vs {target}"] = _auc(t, s.is_null().cast(pl.Float64).to_numpy())
        check, auc = max(checks.items(), key=lambda kv: kv[1])
        if auc >= threshold:
            what = "being missing" if check.startswith("missing") else "its value alone"
            whom = "customers who ever churn in the data" if check.endswith("eventual churn") else "churners in the label window"
            rows.append({"feature": name, "check": check, "roc_auc": round(auc, 4),
                         "evidence": f"{what} separates {whom} from the rest with ROC-AUC {auc:.3f}: information a "
                                     "point-in-time feature cannot have; drop it from the data or the mapping"})
    return pl.DataFrame(rows, schema={"feature": pl.String, "check": pl.String, "roc_auc": pl.Float64, "evidence": pl.String})


def describe_leaks(leaks: list[dict] | pl.DataFrame | None) -> list[str]:
    """One warning line per suspected leak (for the first lines of summaries and reports)."""
    rows = leaks.to_dicts() if isinstance(leaks, pl.DataFrame) else (leaks or [])
    return [f"WARNING: suspected leakage in '{r['feature']}': {r['evidence']}." for r in rows]
