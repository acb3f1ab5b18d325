"""Why customers leave or stay: exact TreeSHAP, summed per trust pillar, told in plain language.

SHAP values are on the model's raw output, the log-odds of churn; pillar contributions are
exact sums of their features' values, so base value + pillars = the model's log-odds.
Reason codes convert to the probability scale a retention team reads (see `reason_codes`).

Examples
--------
>>> from trustml.simulator import simulate
>>> from trustml.features import build_features, Snapshots
>>> from trustml.model import train
>>> w = simulate(2000, 18, seed=2)
>>> table = build_features(w.customers, w.events, Snapshots())
>>> trained, split = train(table, n_estimators=60)
>>> ex = explain(trained, table.labelled().head(50))
>>> ex.values.shape == (50, len(table.registry))
True
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import shap

from trustml.features import FeatureRegistry
from trustml.model import TrainedModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise
from trustml.treeshap import tables_for

__all__ = ["explain", "pillar_explanation", "pillar_importance", "feature_importance", "cohort_pillars",
           "reason_codes", "top_interactions", "explanations_frame", "truthfulness", "dependence_feature", "plot_pillar_importance", "plot_truth"]


def explain(trained: TrainedModel, frame: pl.DataFrame, *, batch_size: int = 100_000, progress: bool = False) -> shap.Explanation:
    """Exact TreeSHAP values (log-odds of churn) for every row of `frame`, as a `shap.Explanation`.

    Path-dependent TreeSHAP, equal to LightGBM's `pred_contrib`, looked up in tables built once
    per model (`trustml.treeshap`: over 10x faster than shap's TreeExplainer on the default model, see
    benchmarks/explain_speed.py), plus the linear base's exact contributions if the model has one.
    """
    names = trained.registry.names
    if not set(names) <= set(frame.columns):
        trained._check(frame)  # raises ModelMismatchError naming the missing features
    # frame[names], not frame.select(names): the same columns, a tenth of the time on the 1-row what-if path
    X = trained.model.transform_matrix(frame[names])
    values, base = _shap_values(trained, X, batch_size=batch_size, progress=progress)
    return shap.Explanation(values=values, base_values=np.full(len(X), base), data=X, feature_names=trained.registry.names,
                            output_names="log-odds of churn")


def _shap_values(trained: TrainedModel, X: np.ndarray, *, batch_size: int = 100_000, progress: bool = False) -> tuple[np.ndarray, float]:
    """(SHAP values, base value) of the model's log-odds on matrix `X`; tables cached per booster."""
    tables = tables_for(trained.model.booster_, num_iteration=trained.model.n_iter_)
    starts = range(0, len(X), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="explaining", unit="batch")
    values = np.concatenate([tables.shap_values(X[s:s + batch_size]) for s in starts]) if len(X) else np.zeros((0, X.shape[1]))
    base = tables.expected_value
    linear = getattr(trained.model, "linear_contributions", None)  # a linear base the trees boost from
    if linear is not None:
        lin_values, lin_base = linear(X)
        values += lin_values
        base += lin_base
    return values, float(base)


def pillar_explanation(expl: shap.Explanation, registry: FeatureRegistry) -> shap.Explanation:
    """Member features summed per pillar: an Explanation whose 'features' are the pillars."""
    pillars = registry.pillars
    idx = {p: [i for i, n in enumerate(expl.feature_names) if registry.pillar_of(n) == p] for p in pillars}
    values = np.column_stack([expl.values[:, idx[p]].sum(axis=1) for p in pillars])
    # a pillar has no single "feature value": its data is its contribution, so shap plots colour by it
    return shap.Explanation(values=values, base_values=expl.base_values, data=values.copy(),
                            feature_names=[PILLARS[p].label for p in pillars], output_names=expl.output_names)


def pillar_importance(expl: shap.Explanation, registry: FeatureRegistry) -> pl.DataFrame:
    """Global ranking of pillars: mean |pillar contribution| (log-odds) and its share."""
    pe = pillar_explanation(expl, registry)
    mean_abs = np.abs(pe.values).mean(axis=0)
    return (pl.DataFrame({"pillar": registry.pillars, "label": pe.feature_names, "mean_abs_shap": mean_abs,
                          "mean_shap": pe.values.mean(axis=0)})
            .with_columns(share=pl.col("mean_abs_shap") / pl.col("mean_abs_shap").sum())
            .sort("mean_abs_shap", descending=True))


def feature_importance(expl: shap.Explanation, registry: FeatureRegistry) -> pl.DataFrame:
    return (pl.DataFrame({"feature": expl.feature_names, "pillar": [registry.pillar_of(n) for n in expl.feature_names],
                          "mean_abs_shap": np.abs(expl.values).mean(axis=0)})
            .with_columns(share=pl.col("mean_abs_shap") / pl.col("mean_abs_shap").sum())
            .sort("mean_abs_shap", descending=True))


def cohort_pillars(expl: shap.Explanation, registry: FeatureRegistry, cohort) -> pl.DataFrame:
    """Mean pillar contribution (log-odds) per cohort, e.g. plan, or churners vs stayers."""
    pe = pillar_explanation(expl, registry)
    df = pl.DataFrame(pe.values, schema=registry.pillars).with_columns(cohort=pl.Series(np.asarray(cohort)))
    return df.group_by("cohort", maintain_order=False).agg(pl.len().alias("customers"), *[pl.col(p).mean() for p in registry.pillars]).sort("cohort")


def _phrase(feature, value, tenure_days: float | None = None) -> str:
    """A feature's value in words. A 'days since' at its cap is a fill, not a fact: it reads as 'none in the last
    W days', or 'none since signup' when the customer is younger than the window."""
    unit = feature.unit or ""
    if "__days_since_" in feature.name and value is not None and not (isinstance(value, float) and np.isnan(value)):
        what = feature.name.split("__")[0].replace("_", " ")
        window = int(feature.name.rsplit("_", 1)[1].rstrip("d"))
        if tenure_days is not None and value >= tenure_days - 1e-9 and tenure_days < window:
            return f"no '{what}' since signup ({tenure_days:,.0f} days ago)"
        if value >= window - 1e-9:
            return f"no '{what}' in the last {window} days"
    if feature.categorical:
        return f"{feature.description.rstrip('.')}: {value}"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"{feature.description.rstrip('.')}: n/a"
    if unit == "yes/no":
        return f"{feature.description.rstrip('.')}: {'yes' if value else 'no'}"
    if unit.startswith("share"):
        return f"{feature.description.rstrip('.')}: {value:.0%}"
    v = f"{value:,.3g}"
    return f"{feature.description.rstrip('.')}: {v}" + (f" {unit}" if unit and unit not in ("events", "category", "currency") and not unit.startswith("share") else "")


def reason_codes(trained: TrainedModel, frame: pl.DataFrame, expl: shap.Explanation | None = None, *,
                 top: int = 3, id_column: str = "customer_id") -> pl.DataFrame:
    """Plain-language reasons per customer, in percentage points of churn risk.

    SHAP values add up on the log-odds scale, not on probabilities. A reason's size here is
    "how much lower the churn risk would be without this feature's contribution":
    risk(all) - risk(all minus this feature's log-odds), in points, both through the model's
    calibrator, so `risk_pct` is the same risk `predict_risk` and `what_if` give. These do not add
    up to the total exactly; the log-odds do. Ids are pseudonymised.
    """
    expl = expl if expl is not None else explain(trained, frame)
    reg = trained.registry
    logit_full = expl.base_values + expl.values.sum(axis=1)
    p_full = trained.risk_from_log_odds(logit_full)
    without = trained.risk_from_log_odds((logit_full[:, None] - expl.values).ravel()).reshape(expl.values.shape)
    points = 100 * (p_full[:, None] - without)
    raw = frame.select(reg.names)
    tenure = frame["tenure_days"].cast(pl.Float64).to_list() if "tenure_days" in frame.columns else [None] * frame.height
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    rows = []
    for i in range(frame.height):
        order = np.argsort(-expl.values[i], kind="stable")[:top]
        for rank, j in enumerate(order, 1):
            if expl.values[i, j] <= 0:
                break
            f = reg.features[j]
            rows.append({"customer": ids[i], "rank": rank, "risk_pct": round(100 * float(p_full[i]), 1),
                         "pillar": PILLARS[f.pillar].label, "feature": f.name,
                         "reason": f"{_phrase(f, raw[i, int(j)], tenure[i])}: +{points[i, j]:.1f} points of churn risk",
                         "points": round(float(points[i, j]), 2), "log_odds": round(float(expl.values[i, j]), 4),
                         "actionable": f.actionable})
    return pl.DataFrame(rows, schema_overrides={"points": pl.Float64, "log_odds": pl.Float64})


def top_interactions(trained: TrainedModel, frame: pl.DataFrame, *, sample: int = 500, top: int = 10, seed: int = 0) -> pl.DataFrame:
    """The strongest feature-pair interactions (mean |SHAP interaction value|) on a sample.

    Interaction values take (features + 1)^2 numbers per row: the sample shrinks with the width so that they
    stay under about 200 MB (a 2,000-column table once took 19 GB here).
    """
    X = trained.model.transform_matrix(trained._check(frame))
    rng = np.random.default_rng(seed)
    fits = max(10, int(2e8 // (8 * (X.shape[1] + 1) ** 2)))
    rows = rng.choice(len(X), size=min(sample, fits, len(X)), replace=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightGBM binary classifier", category=UserWarning)
        inter = shap.TreeExplainer(trained.model.booster_).shap_interaction_values(X[np.sort(rows)])
    strength = np.abs(inter).mean(axis=0)
    names = trained.registry.names
    iu = np.triu_indices(len(names), k=1)
    df = pl.DataFrame({"feature_a": [names[i] for i in iu[0]], "feature_b": [names[j] for j in iu[1]],
                       "strength": 2 * strength[iu]})
    return df.sort("strength", descending=True).head(top)


def explanations_frame(trained: TrainedModel, frame: pl.DataFrame, expl: shap.Explanation) -> pl.DataFrame:
    """One row per customer-snapshot: pseudonymised id, risk, base value, every feature's and pillar's SHAP value."""
    reg = trained.registry
    pe = pillar_explanation(expl, reg)
    out = pl.DataFrame({"customer": pseudonymise(frame["customer_id"].to_list()),
                        "snapshot_date": frame["snapshot_date"], "risk": trained.predict_risk(frame),
                        "base_log_odds": expl.base_values})
    feats = pl.DataFrame(expl.values, schema=[f"shap__{n}" for n in reg.names])
    pills = pl.DataFrame(pe.values, schema=[f"pillar__{p}" for p in reg.pillars])
    return pl.concat([out, pills, feats], how="horizontal")


# --- truthfulness: explanations against the simulator's ground truth -------------------------

LEVERS = {  # trust pillar -> the simulator policy that pulls its lever
    "promises": {"keep_promises": True},
    "empathy": {"empathy_boost": 1.0},
    "respect_for_time": {"max_marketing_per_month": 1},
    "transparency": {"announce_price_changes": True},
    "service_quality": {"resolution_speedup": 3.0},
}


def truthfulness(trained: TrainedModel, frame: pl.DataFrame, truth: pl.DataFrame, *, n_customers: int, n_months: int,
                 seed: int, expl: shap.Explanation | None = None, top_at_risk: int = 200) -> dict:
    """Compare explanations with the simulator's truth on the rows of `frame`.

    Returns a dict with 'pillars' (mean |SHAP| beside the true mean |contribution|, both
    log-odds, centred), 'spearman', 'levers' (top-N at-risk customers: the model's top
    actionable pillar vs the pillar whose true intervention lowers their churn most),
    'agreement', 'disagreements' (one row each, with the reason) and 'reasons' (how many per reason).
    """
    from scipy.stats import spearmanr

    from trustml.simulator import Policy, true_effects
    reg = trained.registry
    expl = expl if expl is not None else explain(trained, frame)
    pe = pillar_explanation(expl, reg)
    keys = frame.select("customer_id", pl.col("snapshot_date").alias("month_start"))
    t = keys.join(truth, on=["customer_id", "month_start"], how="left", maintain_order="left")
    if t["churn_prob"].null_count():
        raise ValueError("truth is missing for some rows: pass the truth of the world the features were built from")
    rows = []
    for k, p in enumerate(reg.pillars):
        c = t[f"contrib_{p}"].to_numpy() if f"contrib_{p}" in t.columns else np.zeros(frame.height)
        rows.append({"pillar": p, "label": PILLARS[p].label, "mean_abs_shap": float(np.abs(pe.values[:, k]).mean()),
                     "true_mean_abs_effect": float(np.abs(c - c.mean()).mean())})
    pillars = pl.DataFrame(rows)
    rho = float(spearmanr(pillars["mean_abs_shap"], pillars["true_mean_abs_effect"]).statistic)
    # levers for the customers the model ranks riskiest
    risk = trained.predict_risk(frame)
    top = np.argsort(-risk, kind="stable")[:top_at_risk]
    levers = [p for p in LEVERS if p in reg.pillars]
    eff = true_effects(n_customers, n_months, seed, {p: Policy(**LEVERS[p]) for p in levers})
    sel = keys[top].join(eff, on=["customer_id", "month_start"], how="left", maintain_order="left")
    true_eff = np.column_stack([sel[f"effect_{p}"].to_numpy() for p in levers])
    lever_idx = [reg.pillars.index(p) for p in levers]
    shap_l = pe.values[top][:, lever_idx]
    model_pick = np.array(levers)[np.argmax(shap_l, axis=1)]
    true_pick = np.array(levers)[np.argmin(true_eff, axis=1)]
    agree = model_pick == true_pick
    ids = pseudonymise(frame["customer_id"].to_numpy()[top].tolist())
    ticket_col = "ticket_opened__count_90d"
    tickets = frame[ticket_col].to_numpy()[top] if ticket_col in frame.columns else np.zeros(len(top))

    def why(i):
        gap = np.sort(-true_eff[i])
        if gap[-1] < 0.005:
            return "no lever moves this customer's true risk by half a point: little to act on"
        if len(gap) > 1 and gap[-1] - gap[-2] < 0.002:
            return "two levers are nearly tied in truth"
        if model_pick[i] == "service_quality" and tickets[i] >= 2:
            return "confounding: heavy users open more tickets, so ticket features mix usage with service"
        if true_pick[i] == "respect_for_time":
            return "contact tolerance is hidden: the model sees contact counts, not each customer's limit"
        return "the model's features approximate decayed trust; the truth sees it exactly"

    lever_table = pl.DataFrame({"customer": ids, "risk": risk[top], "model_top_lever": model_pick, "true_best_lever": true_pick,
                                "true_risk_drop_points": -100 * true_eff.min(axis=1), "agree": agree})
    dis = lever_table.filter(~pl.col("agree")).with_columns(reason=pl.Series([why(i) for i in np.nonzero(~agree)[0]], dtype=pl.String))
    reasons = (dis.group_by("reason").agg(pl.len().alias("customers"))
               .sort(["customers", "reason"], descending=[True, False]))
    return {"pillars": pillars.sort("true_mean_abs_effect", descending=True), "spearman": rho, "levers": lever_table,
            "agreement": float(agree.mean()), "disagreements": dis, "reasons": reasons}


def dependence_feature(expl: shap.Explanation, registry: FeatureRegistry) -> str:
    """The feature most worth a dependence plot: recent marketing contact if the data has it (contact
    fatigue), else the actionable feature with the largest mean |SHAP|, else the largest of all."""
    if "marketing_contact__count_30d" in registry.names:
        return "marketing_contact__count_30d"
    ranked = feature_importance(expl, registry)["feature"].to_list()
    actionable = {f.name for f in registry.actionable()}
    return next((f for f in ranked if f in actionable), ranked[0])


def plot_pillar_importance(pillars: pl.DataFrame, ax=None, title: str = "What drives churn risk, by trust pillar"):
    """Horizontal bars of `pillar_importance`: mean |SHAP| per pillar, trust pillars coloured, context grey."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(7, 3.4))[1]
    colors = ["#4c72b0" if PILLARS[p].is_trust else "#aaaaaa" for p in pillars["pillar"]]
    ax.barh(pillars["label"].to_list(), pillars["mean_abs_shap"].to_list(), color=colors)
    ax.invert_yaxis()
    ax.set(title=title, xlabel="mean |SHAP| (log-odds of churn); grey = context, not a trust pillar")
    return ax


def plot_truth(truth: dict, ax=None):
    """Each pillar's mean |SHAP| against its true mean |effect| in the simulator (log-odds)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    t = truth["pillars"]
    ax.scatter(t["true_mean_abs_effect"], t["mean_abs_shap"], color="#4c72b0")
    for x, y, label in zip(t["true_mean_abs_effect"], t["mean_abs_shap"], t["label"], strict=True):
        ax.annotate(label, (x, y), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set(title=f"Explanations vs truth (Spearman {truth['spearman']:.2f})",
           xlabel="true mean |effect| in the simulator (log-odds)", ylabel="model's mean |SHAP| (log-odds)")
    return ax
