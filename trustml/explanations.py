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
from typing import NamedTuple

import numpy as np
import polars as pl
import shap

from trustml.features import FeatureRegistry
from trustml.model import OFFSET, TrainedModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise
from trustml.treeshap import tables_for

__all__ = ["explain", "pillar_explanation", "pillar_importance", "feature_importance", "cohort_pillars",
           "reason_codes", "top_interactions", "explanations_frame", "truthfulness", "dependence_feature", "plot_dependence", "direction_check", "DirectionCheck",
           "plot_pillar_importance", "plot_beeswarm", "plot_truth"]


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


def _number(value) -> str:
    """A number as people write it: three significant digits, whole thousands separated (e-notation only below 0.001).

    >>> [_number(x) for x in (46512.3, 1234.5, 999.7, 99.44, 2.345, 0.00123, 0)]
    ['46,512', '1,234', '1,000', '99.4', '2.35', '0.00123', '0']
    """
    value = float(value)
    if abs(value) >= 999.5:
        return f"{value:,.0f}"
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:.3g}"
    return f"{value:.1e}"


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
    v = _number(value)
    return f"{feature.description.rstrip('.')}: {v}" + (f" {unit}" if unit and unit not in ("events", "category", "currency") and not unit.startswith("share") else "")


def reason_codes(trained: TrainedModel, frame: pl.DataFrame, expl: shap.Explanation | None = None, *,
                 top: int = 3, id_column: str = "customer_id") -> pl.DataFrame:
    """Plain-language reasons per customer, in percentage points of churn risk.

    SHAP values add up on the log-odds scale, not on probabilities. A reason's size here is
    "how much lower the churn risk would be without this feature's contribution":
    risk(all) - risk(all minus this feature's log-odds), in points, both through the model's
    calibrator, so `risk_pct` is the same risk `predict_risk` and `what_if` give. These do not add
    up to the total exactly; the log-odds do. Ids are pseudonymised. A frame with a `risk_offset` column (out-of-fold
    risks of a flat table, `trustml.model.out_of_fold`) starts from that offset risk, as `predict_risk` does.
    """
    expl = expl if expl is not None else explain(trained, frame)
    reg = trained.registry
    offset = frame[OFFSET].cast(pl.Float64).fill_null(0.0).to_numpy() if OFFSET in frame.columns else 0.0
    logit_full = expl.base_values + expl.values.sum(axis=1) + offset
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
                 seed: int, expl: shap.Explanation | None = None, top_at_risk: int = 200,
                 effects: pl.DataFrame | None = None) -> dict:
    """Compare explanations with the simulator's truth on the rows of `frame`.

    Returns a dict with 'pillars' (mean |SHAP| beside the true mean |contribution|, both
    log-odds, centred), 'spearman', 'levers' (top-N at-risk customers: the model's top
    actionable pillar vs the pillar whose true intervention lowers their churn most),
    'agreement', 'disagreements' (one row each, with the reason) and 'reasons' (how many per reason).
    `effects`: the simulator's `true_effects` of the `LEVERS` policies when already computed (else simulated here).
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
    eff = effects if effects is not None else true_effects(n_customers, n_months, seed, {p: Policy(**LEVERS[p]) for p in levers})
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


def _feature_values(expl: shap.Explanation, feature: str, trained: TrainedModel | None) -> tuple[np.ndarray, list[str] | None]:
    """A feature's values as the model saw them, and its category labels (None for a number)."""
    j = list(expl.feature_names).index(feature)
    x = np.asarray(expl.data[:, j], dtype=float)
    cats = getattr(trained.model, "categories_", {}).get(feature) if trained is not None else None
    return x, (list(map(str, cats)) if cats is not None else None)


def plot_dependence(expl: shap.Explanation, feature: str, trained: TrainedModel, *, ax=None, max_categories: int = 25,
                    seed: int = 0):
    """A feature's SHAP value against its value: a scatter for a number, a box and its points per label for a category.

    SHAP's own dependence plot draws a categorical feature at the model's category codes (0, 1, 2);
    here each category is drawn at its label, the labels ordered by mean SHAP (riskiest first), the
    `max_categories` most frequent shown (the rest counted in the title). Missing values and
    categories the model never saw are drawn as '(missing)'.

    Example
    -------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from trustml.mapping import Mapping, flat_table
    >>> from trustml.model import train
    >>> rng = np.random.default_rng(0)
    >>> plan = rng.choice(["basic", "plus", "pro"], 400)
    >>> df = pl.DataFrame({"id": [str(i) for i in range(400)], "plan": plan, "calls": rng.poisson(3, 400),
    ...                    "left": (rng.random(400) < np.where(plan == "basic", 0.5, 0.1)).astype(int)})
    >>> m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": [1]}})
    >>> table = flat_table(df, m)
    >>> trained, _ = train(table, trials=0)
    >>> ax = plot_dependence(explain(trained, table.frame), "plan", trained)
    >>> sorted(t.get_text() for t in ax.get_xticklabels())
    ['basic', 'plus', 'pro']
    """
    import matplotlib.pyplot as plt
    f = trained.registry[feature]
    x, cats = _feature_values(expl, feature, trained)
    ax = ax or plt.subplots(figsize=(7 if cats is None else min(16.0, max(7.0, 0.3 * min(len(cats) + 1, max_categories))), 4))[1]
    s = expl.values[:, list(expl.feature_names).index(feature)]
    what = f.description.rstrip(".") if f.description else feature
    ylabel = f"SHAP value of {feature} (log-odds of churn)"
    if cats is None:
        ok = np.isfinite(x)
        ax.scatter(x[ok], s[ok], s=8, alpha=0.5, color="#4c72b0", linewidths=0)
        ax.axhline(0, color="#999999", lw=0.8)
        unit = f" ({f.unit})" if f.unit and f.unit not in ("category",) else ""
        missing = f"; {int((~ok).sum()):,} rows with no value not shown" if (~ok).any() else ""
        ax.set(xlabel=f"{what}{unit}", ylabel=ylabel, title=f"How {feature} moves churn risk in the model{missing}")
        return ax
    labels = np.array([cats[int(v)] if np.isfinite(v) and 0 <= int(v) < len(cats) else "(missing)" for v in x], dtype=object)
    frame = pl.DataFrame({"label": labels.astype(str), "shap": s})
    stats = frame.group_by("label").agg(pl.len().alias("n"), pl.col("shap").mean().alias("mean"))
    shown = stats.sort(["n", "label"], descending=[True, False]).head(max_categories)
    order = shown.sort(["mean", "label"], descending=[True, False])["label"].to_list()
    rng = np.random.default_rng(seed)
    groups = [frame.filter(pl.col("label") == lab)["shap"].to_numpy() for lab in order]
    pos = np.arange(1, len(order) + 1)
    ax.boxplot(groups, positions=pos, widths=0.6, showfliers=False, medianprops={"color": "#c44e52"})
    for p, g in zip(pos, groups, strict=True):
        ax.scatter(p + rng.uniform(-0.2, 0.2, len(g)), g, s=6, alpha=0.35, color="#4c72b0", linewidths=0)
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xticks(pos)
    ax.set_xticklabels(order, rotation=0 if len(order) <= 5 and max(map(len, order)) <= 14 else 60,
                       ha="center" if len(order) <= 5 and max(map(len, order)) <= 14 else "right")
    rest = stats.height - len(order)
    more = f" ({rest} rarer categories not shown)" if rest > 0 else ""
    ax.set(xlabel=what, ylabel=ylabel, title=f"How {feature} moves churn risk in the model{more}")
    return ax


class DirectionCheck(NamedTuple):
    """`direction_check`'s answer: one row per feature with a declared direction, and a sentence per contradiction."""

    table: pl.DataFrame
    warnings: list[str]


_SAYS = {1: "+1 (more of it raises churn risk)", -1: "-1 (more of it lowers churn risk)"}


def direction_check(expl: shap.Explanation, registry: FeatureRegistry, churned, *, constrained: bool = False,
                    min_rows: int = 30, min_strength: float = 0.3, min_data_strength: float = 0.05,
                    alpha: float = 0.01) -> DirectionCheck:
    """Does the model agree with each declared direction, on held-out rows? Contradictions as plain sentences.

    `expl` explains held-out rows and `churned` (0/1) are their labels (a study's `explanation` and
    ``test["churned"]``). For every numeric feature whose registry `direction` is +1 (more of it raises
    churn risk) or -1 (lowers it), the sign the model learned is that of Spearman's rho between the
    value and its SHAP value, counted when |rho| >= `min_strength` and p < `alpha`. A tree model also
    learns shapes from noise, so a sign counts only if it holds on these rows: the feature's SHAP value
    must rise with churn (Spearman with `churned` above 0, p < `alpha`), else the verdict is 'not
    confirmed'. Other verdicts: 'agrees', 'contradicts', 'unclear' (no clear sign: weak, or both
    ways), 'unused' (no weight in the model), 'too few rows' (under `min_rows` with a value). A model
    trained with monotone constraints (`constrained=True`) cannot learn the opposite sign, so the data
    is read instead: the sign of Spearman's rho between the value and `churned`, counted when |rho| >=
    `min_data_strength` and p < `alpha`. Categorical features are skipped (a direction has no meaning).

    Returns a `DirectionCheck`: ``table`` (feature, pillar, declared, learned, strength, rows,
    measured_on, verdict) and ``warnings`` (one sentence per 'contradicts').

    Example
    -------
    >>> from trustml.features import Feature
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 2))
    >>> sh = np.column_stack([-0.8 * x[:, 0], 0.8 * x[:, 1]])
    >>> churned = (rng.random(300) < 1 / (1 + np.exp(-sh.sum(axis=1)))).astype(int)
    >>> ex = shap.Explanation(values=sh, base_values=np.zeros(300), data=x, feature_names=["tenure", "tickets"])
    >>> reg = FeatureRegistry((Feature("tenure", "account", "", "", False, None, 1, False),
    ...                        Feature("tickets", "service_quality", "", "", False, None, 1, False)))
    >>> check = direction_check(ex, reg, churned)
    >>> check.table.select("feature", "declared", "learned", "verdict").rows()
    [('tenure', 1, -1, 'contradicts'), ('tickets', 1, 1, 'agrees')]
    >>> print(check.warnings[0][:95])
    tenure: declared +1 (more of it raises churn risk), but the model learned the opposite: more of
    """
    from scipy.stats import spearmanr
    names = list(expl.feature_names)
    y = np.asarray(churned, dtype=float)
    if len(y) != len(expl.values):
        raise ValueError(f"churned has {len(y)} labels for {len(expl.values)} explained rows: pass the labels of the explained rows")
    rows, warns = [], []
    for f in registry:
        if f.name not in names or f.categorical or f.direction not in (-1, 1):
            continue
        j = names.index(f.name)
        x = np.asarray(expl.data[:, j], dtype=float)
        s = np.asarray(expl.values[:, j], dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        n = int(ok.sum())
        learned, rho = 0, float("nan")
        on = "data (churn label)" if constrained else "model (SHAP)"
        if n < min_rows or np.unique(x[ok]).size < 2 or np.unique(y[ok]).size < 2:
            verdict = "too few rows"
        elif not constrained and np.ptp(s[ok]) < 1e-12:
            verdict = "unused"
        else:
            r = spearmanr(x[ok], y[ok] if constrained else s[ok])
            rho, p = float(r.statistic), float(r.pvalue)
            if np.isfinite(rho) and abs(rho) >= (min_data_strength if constrained else min_strength) and p < alpha:
                learned = int(np.sign(rho))
                verdict = "agrees" if learned == f.direction else "contradicts"
                if not constrained:   # the learned shape must predict churn on these rows, not be noise the trees fitted
                    held = spearmanr(s[ok], y[ok])
                    if not (held.statistic > 0 and held.pvalue < alpha):
                        verdict = "not confirmed"
            else:
                verdict = "unclear"
        rows.append({"feature": f.name, "pillar": f.pillar, "declared": f.direction, "learned": learned,
                     "strength": rho, "rows": n, "measured_on": on, "verdict": verdict})
        if verdict == "contradicts":
            more = "lowers" if f.direction == 1 else "raises"
            how = (f"in the data, customers with more of it churned {'less' if f.direction == 1 else 'more'} often" if constrained
                   else f"the model learned the opposite: more of it {more} the risk, and that holds on held-out customers")
            stat = f"Spearman {rho:+.2f} between the value and {'the churn label' if constrained else 'its SHAP contribution'}"
            fix = ("the monotone constraint forced the declared sign on the model: check the direction" if constrained
                   else "check the direction in the mapping, or how the column is coded")
            warns.append(f"{f.name}: declared {_SAYS[f.direction]}, but {how} ({stat}, {n:,} rows); {fix}.")
    schema = {"feature": pl.String, "pillar": pl.String, "declared": pl.Int64, "learned": pl.Int64, "strength": pl.Float64,
              "rows": pl.Int64, "measured_on": pl.String, "verdict": pl.String}
    return DirectionCheck(pl.DataFrame(rows, schema=schema), warns)


BEESWARM_MAX_ROWS = 20_000   # dots a beeswarm draws at most: past this, a seeded sample (the title says so)


def plot_beeswarm(expl: shap.Explanation, *, max_rows: int = BEESWARM_MAX_ROWS, seed: int = 0):
    """SHAP's beeswarm of `expl` (one dot per row and column), on a seeded sample of `max_rows` rows beyond that many:
    a million dots are no more readable than twenty thousand, and take minutes to lay out.

    Example
    -------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> e = shap.Explanation(np.random.default_rng(0).normal(size=(500, 2)), feature_names=["a", "b"])
    >>> plot_beeswarm(e, max_rows=100).get_title()
    'a random 100 of 500 rows'
    """
    import matplotlib.pyplot as plt
    n = expl.values.shape[0]
    if n > max_rows:
        expl = expl[np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))]
    shap.plots.beeswarm(expl, show=False)
    ax = plt.gca()
    if n > max_rows:
        ax.set_title(f"a random {max_rows:,} of {n:,} rows")
    return ax


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
