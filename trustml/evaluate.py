"""Temporal evaluation: metrics as tidy tables (computed once), plots drawn from them, baselines.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> metrics(y, p)["roc_auc"]
0.75
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.calibration import calibration_curve
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trustml.features import FeatureTable
from trustml.model import CustomerSplit, TemporalSplit, sample_customers, train

__all__ = ["metrics", "roc_auc", "top_decile_lift", "top_share_positives", "bootstrap", "interval", "gains_table", "calibration_table",
           "roc_table", "compare_models", "baselines", "backtest", "rule_score", "fit_logistic", "plot_evaluation", "cross_validate",
           "held_out_folds", "calibration_report"]


def top_share_positives(y, p, share: float) -> float:
    """Expected churners among the top `share` of rows by score, ties at the cut-off split evenly.

    The one tie-aware definition behind top-decile lift and the gains table: k = round(share x n) rows
    are taken; rows scored above the cut-off count fully, rows tied at it count in proportion.

    >>> top_share_positives(np.array([1, 0, 1, 0]), np.array([0.9, 0.5, 0.5, 0.5]), 0.5)
    1.3333333333333333
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    k = int(round(share * len(y)))
    if k <= 0:
        return 0.0
    cut = np.sort(p)[::-1][k - 1]
    above, tied = p > cut, p == cut
    return float(y[above].sum() + (k - above.sum()) * y[tied].mean())


def top_decile_lift(y, p) -> float:
    """Churn rate among the riskiest 10% (tie-aware, see `top_share_positives`) over the base rate."""
    y = np.asarray(y, dtype=float)
    k = int(round(0.1 * len(y)))
    return float(top_share_positives(y, p, 0.1) / k / y.mean()) if k and y.mean() > 0 else float("nan")


def metrics(y, p, *, probability: bool = True) -> dict[str, float | None]:
    """ROC-AUC, PR-AUC, log loss, Brier score, top-decile lift (tie-aware) and base rate.

    With probability=False (a score, not a probability) log loss and Brier are None.
    """
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("metrics need both churners and stayers in y")
    return {"roc_auc": round(float(roc_auc_score(y, p)), 4), "pr_auc": round(float(average_precision_score(y, p)), 4),
            "log_loss": round(float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6))), 4) if probability else None,
            "brier": round(float(brier_score_loss(y, p)), 5) if probability else None,
            "top_decile_lift": round(top_decile_lift(y, p), 3), "base_rate": round(float(y.mean()), 4),
            "n": int(len(y)), "churners": int(y.sum())}


def roc_auc(y, p) -> float:
    """ROC-AUC from average ranks (ties count half), equal to scikit-learn's `roc_auc_score` on binary labels
    without its input checks: the bootstrap calls it hundreds of times.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    from scipy.stats import rankdata
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if not n1 or not n0:
        raise ValueError("ROC-AUC needs both churners and stayers")
    ranks = rankdata(np.asarray(p, dtype=float))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap(y, scores: dict[str, np.ndarray], *, groups=None, n_boot: int = 300, seed: int = 0,
              metric=roc_auc) -> dict[str, np.ndarray]:
    """`metric` of each score on `n_boot` bootstrap resamples of customers (rows of one group move together).

    The same resamples serve every score, so differences between scores are paired.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(y))
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[members], np.arange(len(codes)))
    sizes = np.diff(np.append(starts, len(y)))
    out = {name: [] for name in scores}
    # ROC-AUC (the default) on a resample is a weighted AUC of the original rows, weights = times drawn: one sort per
    # score serves every resample (the same value as `roc_auc` on the repeated rows)
    sorted_scores = {name: _sorted_for_auc(np.asarray(s, dtype=float), y) for name, s in scores.items()} if metric is roc_auc else None
    positive = y.astype(bool)
    for _ in range(n_boot):
        pick = rng.integers(0, len(codes), len(codes))
        if sorted_scores is not None:   # a row's weight: the times its group was drawn (no repeated rows built)
            times = np.bincount(pick, minlength=len(codes)).astype(float)[inverse]
            if not (times[positive].any() and times[~positive].any()):
                continue
            for name, (order, first, pos) in sorted_scores.items():
                out[name].append(_weighted_auc(times[order], first, pos))
            continue
        n = sizes[pick]
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # position within each picked group
        rows = members[np.repeat(starts[pick], n) + offset]
        if len(np.unique(y[rows])) < 2:
            continue
        for name, s in scores.items():
            out[name].append(metric(y[rows], np.asarray(s)[rows]))
    return {k: np.asarray(v) for k, v in out.items()}


def _sorted_for_auc(p: np.ndarray, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order of the scores, first index of each run of tied scores in that order, positive label in that order)."""
    order = np.argsort(p, kind="stable")
    ps = p[order]
    first = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    return order, first, np.asarray(y)[order].astype(bool)


def _weighted_auc(w: np.ndarray, first: np.ndarray, pos: np.ndarray) -> float:
    """ROC-AUC with row weights `w` (in score order): each positive counts the negative weight below it, ties half."""
    wpos, wneg = np.where(pos, w, 0.0), np.where(pos, 0.0, w)
    gpos, gneg = np.add.reduceat(wpos, first), np.add.reduceat(wneg, first)
    below = np.cumsum(gneg) - gneg
    return float(np.sum(gpos * (below + 0.5 * gneg)) / (gpos.sum() * gneg.sum()))


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap draws."""
    a = (1 - level) / 2
    return float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))


def gains_table(y, p, bins: int = 10) -> pl.DataFrame:
    """Cumulative gains and lift by risk decile (decile 1 = highest risk), tie-aware like `top_decile_lift`."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n, total = len(y), y.sum()
    cum = [0.0] + [top_share_positives(y, p, (k + 1) / bins) for k in range(bins)]
    edges = [int(round((k + 1) / bins * n)) for k in range(bins)]
    rows = []
    for k in range(bins):
        size = edges[k] - (edges[k - 1] if k else 0)
        churners = cum[k + 1] - cum[k]
        rows.append({"decile": k + 1, "customers": size, "churners": round(churners, 2),
                     "churn_rate": churners / size if size else 0.0,
                     "cum_share_customers": edges[k] / n, "cum_share_churners": cum[k + 1] / total})
    return pl.DataFrame(rows).with_columns(lift=pl.col("churn_rate") / (total / n))


def calibration_table(y, p, bins: int = 10) -> pl.DataFrame:
    """Reliability: mean predicted vs observed churn rate per quantile bin."""
    obs, pred = calibration_curve(np.asarray(y), np.asarray(p), n_bins=bins, strategy="quantile")
    return pl.DataFrame({"mean_predicted": pred, "observed_rate": obs})


def roc_table(y, p) -> pl.DataFrame:
    fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(p))
    return pl.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr})


def _tenure(frame: pl.DataFrame, registry) -> np.ndarray | None:
    """Tenure in days where the data has it (snapshots: tenure_days; flat tables: a column named like tenure, months)."""
    if "tenure_days" in frame.columns:
        return frame["tenure_days"].cast(pl.Float64).fill_null(0).to_numpy()
    names = [n for n in registry.names if "tenure" in n.lower() and not registry[n].categorical]
    return None if not names else 30.0 * frame[names[0]].cast(pl.Float64).fill_null(0).to_numpy()


def rule_score(frame: pl.DataFrame) -> np.ndarray:
    """A simple rule a retention team might use: recent tickets raise risk, short tenure raises it."""
    tenure = frame["tenure_days"].cast(pl.Float64).fill_null(0).to_numpy()
    return frame["ticket_opened__count_90d"].cast(pl.Float64).fill_null(0).to_numpy() + 1.0 / (1.0 + tenure / 90.0)


def _recency_frequency(registry) -> tuple[str, str] | None:
    """The days-since and count features of the data's main activity signal (engagement first), if any."""
    feats = [f for f in registry if f.spec is not None or "__" in f.name]
    recency = [f for f in feats if "__days_since_" in f.name]
    if not recency:
        return None
    recency.sort(key=lambda f: (f.pillar != "engagement", f.name))
    signal = recency[0].name.split("__")[0]
    counts = sorted((f.name for f in feats if f.name.startswith(signal + "__count_")), key=lambda n: -int(n.rsplit("_", 1)[1][:-1]))
    return (recency[0].name, counts[0]) if counts else None


def baselines(train: pl.DataFrame, test: pl.DataFrame, registry) -> dict[str, tuple[np.ndarray, bool]]:
    """Baselines that fit the data: {name: (test scores, is a probability)}; each only where its inputs exist."""
    out = {"logistic regression": (fit_logistic(train, registry.names, registry.categorical)
                                   .predict_proba(test.select(registry.names).to_pandas())[:, 1], True)}
    tenure = _tenure(test, registry)
    if tenure is not None:
        out["rule: short tenure"] = (1.0 / (1.0 + tenure / 90.0), False)
        if "ticket_opened__count_90d" in test.columns:
            out["rule: tickets + short tenure"] = (rule_score(test), False)
    rf = _recency_frequency(registry)
    if rf is not None:
        lr = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000))
        lr.fit(train.select(rf).to_numpy(), train["churned"].to_numpy())
        out[f"recency/frequency ({rf[0]}, {rf[1]})"] = (lr.predict_proba(test.select(rf).to_numpy())[:, 1], True)
    return out


def fit_logistic(train: pl.DataFrame, names: list[str], categorical: list[str]):
    """Logistic-regression baseline on the same features (impute, scale, one-hot)."""
    num = [n for n in names if n not in categorical]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])
    model = make_pipeline(pre, LogisticRegression(max_iter=2000))
    return model.fit(train.select(names).to_pandas(), train["churned"].to_numpy())


BASELINE_MAX_ROWS = 300_000   # training rows the baselines learn from at most


def compare_models(table: FeatureTable, split: TemporalSplit | CustomerSplit, trained, oracle: np.ndarray | None = None,
                   *, n_boot: int = 300, seed: int = 0) -> pl.DataFrame:
    """The model beside baselines that fit the data (and the simulator's oracle) on the same test rows.

    The baselines learn from the training rows (beyond `BASELINE_MAX_ROWS`, a seeded sample of whole customers: a
    logistic regression's few coefficients are settled long before).

    Every ROC-AUC has a 95% interval (bootstrap over customers), and `vs_model` says whether each
    baseline's difference from the model is clear or "cannot tell apart" (its paired 95% interval
    holds 0).
    """
    tr, _, te = split.frames(table.labelled())
    tr = sample_customers(tr, BASELINE_MAX_ROWS, seed)[0]
    y = te["churned"].to_numpy()
    scores = {"lightgbm (calibrated)": (trained.predict_risk(te), True),
              **(baselines(tr, te, table.registry) if tr.height and tr["churned"].n_unique() == 2 else {})}
    if oracle is not None:
        scores["oracle (true probability)"] = (np.asarray(oracle), True)
    draws = bootstrap(y, {k: v[0] for k, v in scores.items()}, groups=te["customer_id"].to_numpy(), n_boot=n_boot, seed=seed)
    ref = draws["lightgbm (calibrated)"]
    rows = []
    for name, (p, prob) in scores.items():
        lo, hi = interval(draws[name])
        if name == "lightgbm (calibrated)":
            verdict = "-"
        else:
            dlo, dhi = interval(draws[name] - ref)
            verdict = "cannot tell apart" if dlo <= 0 <= dhi else ("better than the model" if dlo > 0 else "worse than the model")
        rows.append({"model": name, **metrics(y, p, probability=prob), "roc_auc_lo": round(lo, 4), "roc_auc_hi": round(hi, 4),
                     "vs_model": verdict})
    return pl.DataFrame(rows)


def _fixed_params(trained) -> dict:
    """The parameters a trained model was fitted with, to refit on other folds without tuning again."""
    from trustml.model import SEARCH_SPACE
    if trained is None:
        return {}
    keep = {*SEARCH_SPACE, "n_estimators", "early_stopping"}  # what tuning chooses (linear_base included), one list
    return {k: v for k, v in trained.model.get_params().items() if k in keep}


def backtest(table: FeatureTable, folds: int = 3, test_snapshots: int = 2, *, trained=None, **train_kwargs) -> pl.DataFrame:
    """Rolling-origin backtest: each fold trains on everything before its test snapshots.

    With `trained`, every fold refits that model's parameters (no new tuning); else `train_kwargs` go to
    `train`. Short histories get the folds that fit (at least one, else a clear error).
    """
    from trustml.model import temporal_split
    if trained is not None:
        # the model's own training checked for leaks already: the folds refit, they do not re-check
        train_kwargs = {"trials": 0, "leakage": "ignore", **_fixed_params(trained), **train_kwargs}
    dates = sorted(table.labelled()["snapshot_date"].unique().to_list())
    rows = []
    for k in range(folds):
        cut = len(dates) - k * test_snapshots
        sub = FeatureTable(table.frame.filter(pl.col("snapshot_date").is_in(dates[:cut])),
                           table.registry, table.snapshots, table.as_of, table.dropped)
        try:
            split = temporal_split(sub, test_snapshots=test_snapshots)
        except ValueError as e:
            if not rows:
                raise ValueError(f"backtest: not even one fold fits: {e}") from None
            break
        fold_model, _ = train(sub, split, **train_kwargs)
        te = split.frames(sub.labelled())[2]
        rows.append({"fold": k + 1, "train_until": split.train[-1], "test_from": split.test[0], "test_to": split.test[-1],
                     **metrics(te["churned"], fold_model.predict_risk(te))})
    n = len(rows)
    return pl.DataFrame(rows).with_columns(fold=n + 1 - pl.col("fold")).sort("fold")


def plot_evaluation(y, p, *, label: str = "model", axes=None):
    """ROC, gains and reliability panels from the tables above (compute once, draw here)."""
    import matplotlib.pyplot as plt
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    roc, gains, cal = roc_table(y, p), gains_table(y, p), calibration_table(y, p)
    axes[0].plot(roc["false_positive_rate"], roc["true_positive_rate"], label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    axes[0].plot([0, 1], [0, 1], ls=":", c="grey")
    axes[0].set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    axes[1].plot([0, *gains["cum_share_customers"]], [0, *gains["cum_share_churners"]], marker="o", label=label)
    axes[1].plot([0, 1], [0, 1], ls=":", c="grey")
    axes[1].set(title="Cumulative gains", xlabel="share of customers targeted (highest risk first)", ylabel="share of churners reached")
    axes[2].plot(cal["mean_predicted"], cal["observed_rate"], marker="o", label=label)
    hi = float(max(cal["mean_predicted"].max(), cal["observed_rate"].max()))
    axes[2].plot([0, hi], [0, hi], ls=":", c="grey")
    axes[2].set(title="Calibration", xlabel="predicted churn probability", ylabel="observed churn rate")
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
    return axes


FOLD_MAX_ROWS = 400_000   # held-out folds refit on a seeded sample of whole customers beyond this many rows


def held_out_folds(table: FeatureTable, trained=None) -> pl.DataFrame:
    """Metrics on several held-out folds: a rolling-origin `backtest` for snapshots over time, stratified
    5-fold `cross_validate` for a flat table (where there is no time to keep in order). With `trained`,
    the folds refit its parameters instead of tuning again. Beyond `FOLD_MAX_ROWS` rows, on a seeded sample of
    whole customers; the ``customers`` column says how many."""
    frame, n, _ = sample_customers(table.frame, FOLD_MAX_ROWS)
    if frame is not table.frame:
        table = FeatureTable(frame, table.registry, table.snapshots, table.as_of, table.dropped)
    out = cross_validate(table, trained=trained) if table.is_flat else backtest(table, trained=trained)
    return out.with_columns(customers=pl.lit(n))


def cross_validate(table: FeatureTable, folds: int = 5, seed: int = 0, *, trained=None, **params) -> pl.DataFrame:
    """Stratified k-fold ROC-AUC for one-row-per-customer tables (LightGBM with `trained`'s parameters, else
    `train`'s untuned defaults, and logistic regression), one row per fold. For dated snapshots use `backtest`.
    """
    from sklearn.model_selection import StratifiedKFold

    from trustml.model import TRAIN_DEFAULTS, ChurnModel
    if not table.is_flat:
        raise ValueError("cross_validate shuffles customers: for snapshots over time use backtest()")
    lab = table.labelled()
    y = lab["churned"].to_numpy()
    X = lab.select(table.registry.names)
    params = {**(TRAIN_DEFAULTS if trained is None else _fixed_params(trained)), **params}
    rows = []
    for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y), 1):
        model = ChurnModel(**params).fit(X[tr], y[tr])
        lr = fit_logistic(lab[tr], table.registry.names, table.registry.categorical)
        rows.append({"fold": k, "lightgbm_roc_auc": roc_auc_score(y[te], model.predict_proba(X[te])[:, 1]),
                     "logistic_roc_auc": roc_auc_score(y[te], lr.predict_proba(X[te].to_pandas())[:, 1]), "n_test": len(te)})
    return pl.DataFrame(rows)


def calibration_report(y, raw, calibrated, bins: int = 10) -> pl.DataFrame:
    """Calibration before and after the calibrator, on the same rows: Brier score, log loss, expected
    calibration error (|predicted - observed| averaged over equal-size quantile bins), distinct scores."""
    y = np.asarray(y)
    rows = []
    for name, p in (("before (raw model)", np.asarray(raw)), ("after (calibrated)", np.asarray(calibrated))):
        cal = calibration_table(y, p, bins)
        ece = float(np.abs(cal["mean_predicted"] - cal["observed_rate"]).mean())
        rows.append({"scores": name, "brier": round(float(brier_score_loss(y, p)), 5),
                     "log_loss": round(float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6))), 4), "calibration_error": round(ece, 4),
                     "mean_predicted": round(float(p.mean()), 4), "observed_rate": round(float(y.mean()), 4),
                     "distinct_scores": int(len(np.unique(p))), "roc_auc": round(float(roc_auc_score(y, p)), 4)})
    return pl.DataFrame(rows)
