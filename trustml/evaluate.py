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
from trustml.model import CustomerSplit, TemporalSplit, train

__all__ = ["metrics", "gains_table", "calibration_table", "roc_table", "compare_models", "backtest",
           "rule_score", "fit_logistic", "plot_evaluation", "cross_validate", "held_out_folds"]


def metrics(y, p, *, probability: bool = True) -> dict[str, float | None]:
    """ROC-AUC, PR-AUC, log loss, Brier score, top-decile lift and base rate.

    With probability=False (a score, not a probability) log loss and Brier are None.
    """
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("metrics need both churners and stayers in y")
    top = p >= np.quantile(p, 0.9)
    return {"roc_auc": round(float(roc_auc_score(y, p)), 4), "pr_auc": round(float(average_precision_score(y, p)), 4),
            "log_loss": round(float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6))), 4) if probability else None,
            "brier": round(float(brier_score_loss(y, p)), 5) if probability else None,
            "top_decile_lift": round(float(y[top].mean() / y.mean()), 3), "base_rate": round(float(y.mean()), 4),
            "n": int(len(y))}


def gains_table(y, p, bins: int = 10) -> pl.DataFrame:
    """Cumulative gains and lift by risk decile (decile 1 = highest risk)."""
    order = np.argsort(-np.asarray(p), kind="stable")
    y = np.asarray(y)[order]
    edges = np.linspace(0, len(y), bins + 1).astype(int)
    rows, total = [], y.sum()
    for k in range(bins):
        seg = y[edges[k]:edges[k + 1]]
        rows.append({"decile": k + 1, "customers": len(seg), "churners": int(seg.sum()),
                     "churn_rate": float(seg.mean()) if len(seg) else 0.0,
                     "cum_share_customers": edges[k + 1] / len(y), "cum_share_churners": float(y[:edges[k + 1]].sum() / total)})
    df = pl.DataFrame(rows)
    return df.with_columns(lift=pl.col("churn_rate") / (total / len(y)))


def calibration_table(y, p, bins: int = 10) -> pl.DataFrame:
    """Reliability: mean predicted vs observed churn rate per quantile bin."""
    obs, pred = calibration_curve(np.asarray(y), np.asarray(p), n_bins=bins, strategy="quantile")
    return pl.DataFrame({"mean_predicted": pred, "observed_rate": obs})


def roc_table(y, p) -> pl.DataFrame:
    fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(p))
    return pl.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr})


def rule_score(frame: pl.DataFrame) -> np.ndarray:
    """A simple rule a retention team might use: recent tickets raise risk, tenure lowers it."""
    tickets = frame["ticket_opened__count_90d"].to_numpy() if "ticket_opened__count_90d" in frame.columns else 0.0
    if "tenure_days" in frame.columns:
        tenure = frame["tenure_days"].cast(pl.Float64).fill_null(0).to_numpy()
    elif "tenure" in frame.columns:  # flat tables such as Telco: tenure in months
        tenure = 30.0 * frame["tenure"].cast(pl.Float64).fill_null(0).to_numpy()
    else:
        tenure = 0.0
    return np.broadcast_to(np.asarray(tickets + 1.0 / (1.0 + np.asarray(tenure) / 90.0), dtype=float), (frame.height,)).copy()


def fit_logistic(train: pl.DataFrame, names: list[str], categorical: list[str]):
    """Logistic-regression baseline on the same features (impute, scale, one-hot)."""
    num = [n for n in names if n not in categorical]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])
    model = make_pipeline(pre, LogisticRegression(max_iter=2000))
    return model.fit(train.select(names).to_pandas(), train["churned"].to_numpy())


def compare_models(table: FeatureTable, split: TemporalSplit | CustomerSplit, trained, oracle: np.ndarray | None = None) -> pl.DataFrame:
    """The model beside its baselines (and the simulator's oracle, if given) on the same test snapshots."""
    tr, _, te = split.frames(table.labelled())
    y = te["churned"].to_numpy()
    lr = fit_logistic(tr, table.registry.names, table.registry.categorical)
    scores = {"lightgbm (calibrated)": trained.predict_risk(te),
              "logistic regression": lr.predict_proba(te.select(table.registry.names).to_pandas())[:, 1],
              "rule: tickets + short tenure": rule_score(te)}
    if oracle is not None:
        scores["oracle (true probability)"] = oracle
    rows = []
    for name, p in scores.items():
        m = metrics(y, p, probability=not name.startswith("rule"))  # a rule's score is not a probability
        rows.append({"model": name, **m})
    return pl.DataFrame(rows)


def backtest(table: FeatureTable, folds: int = 3, test_snapshots: int = 2, **train_kwargs) -> pl.DataFrame:
    """Rolling-origin backtest: each fold trains on everything before its test snapshots.

    Short histories get the folds that fit (at least one, else a clear error).
    """
    from trustml.model import temporal_split
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
        trained, _ = train(sub, split, **train_kwargs)
        te = split.frames(sub.labelled())[2]
        rows.append({"fold": k + 1, "train_until": split.train[-1], "test_from": split.test[0], "test_to": split.test[-1],
                     **metrics(te["churned"], trained.predict_risk(te))})
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


def held_out_folds(table: FeatureTable) -> pl.DataFrame:
    """Metrics on several held-out folds: a rolling-origin `backtest` for snapshots over time, stratified
    5-fold `cross_validate` for a flat table (where there is no time to keep in order)."""
    return cross_validate(table) if table.is_flat else backtest(table)


def cross_validate(table: FeatureTable, folds: int = 5, seed: int = 0, **params) -> pl.DataFrame:
    """Stratified k-fold ROC-AUC for one-row-per-customer tables (LightGBM with `train`'s defaults, and
    logistic regression), one row per fold. For dated snapshots use `backtest`: never shuffle time.
    """
    from sklearn.model_selection import StratifiedKFold

    from trustml.model import TRAIN_DEFAULTS, ChurnModel
    if not table.is_flat:
        raise ValueError("cross_validate shuffles customers: for snapshots over time use backtest()")
    lab = table.labelled()
    y = lab["churned"].to_numpy()
    X = lab.select(table.registry.names)
    rows = []
    for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y), 1):
        model = ChurnModel(**{**TRAIN_DEFAULTS, **params}).fit(X[tr], y[tr])
        lr = fit_logistic(lab[tr], table.registry.names, table.registry.categorical)
        rows.append({"fold": k, "lightgbm_roc_auc": roc_auc_score(y[te], model.predict_proba(X[te])[:, 1]),
                     "logistic_roc_auc": roc_auc_score(y[te], lr.predict_proba(X[te].to_pandas())[:, 1]), "n_test": len(te)})
    return pl.DataFrame(rows)
