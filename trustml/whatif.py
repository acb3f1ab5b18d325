"""What if we had kept that promise? Counterfactual risk, retention plans and campaigns.

Everything here is a pure function of a trained model and feature rows; the JupyterLab
explorer (`trustml.explorer`) only binds widgets to them.

A *lever* is one actionable signal from the feature registry, e.g. ``promise_broken``: its
primary feature (the first actionable one, e.g. ``promise_broken__count_90d``) is what a
slider moves, in that feature's own unit and valid range. The lever's other actionable
features (``promise_broken__share_180d``, ``promise_broken__decayed_365d_hl60``) follow by the
same ratio, so the model never sees "no broken promises in 90 days" beside "60% of promises
broken" for one customer. Categorical levers (a contract type, say) take one of their values.

Examples
--------
>>> from trustml.study import Study
>>> study = Study.load(n_customers=1500, n_months=15, seed=2)
>>> [lv.name for lv in levers(study.registry)][:3]
['resolution_hours', 'ticket_reopened', 'empathy_score']
>>> result = what_if(study.trained, study.riskiest(1), {"promise_broken": 0})
>>> result.risk_after <= result.risk_before
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from trustml.features import FeatureRegistry
from trustml.model import TrainedModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise

__all__ = ["Lever", "LeverCost", "WhatIf", "levers", "apply_levers", "what_if", "cheapest_plan", "campaign",
           "describe_settings", "change_points", "SIMULATOR_LEVERS", "whatif_vs_truth"]


@dataclass(frozen=True)
class Lever:
    """One thing the company can change for a customer, read from the feature registry.

    A numeric lever may take either exactly the values in `values` (e.g. 1, 2, 3 or 4 products), or
    any value in [low, high] on the lattice low + k * `step` (no step: any value); `integer` levers
    take whole numbers only. A request outside that set is an error, never a silent clip.

    Example
    -------
    >>> lv = Lever("products", "account", "products", (), "Products held", "", 1, 4, values=(1, 2, 3, 4), integer=True)
    >>> lv.grid(3), lv.allows(1.75), lv.allowed_text()
    ([1.0, 2.0, 4.0], False, 'one of [1, 2, 3, 4]')
    """

    name: str                      # the signal, e.g. 'promise_broken'
    pillar: str
    primary: str                   # the feature a control moves
    linked: tuple[str, ...]        # features that follow the primary by the same ratio
    description: str
    unit: str
    low: float | None = None       # valid range of the primary (numeric levers)
    high: float | None = None
    direction: int = 0             # +1: lowering it should lower risk; 0: either way (e.g. contact)
    options: tuple[str, ...] = ()  # categorical levers: the values it can take
    values: tuple[float, ...] = ()  # numeric levers with a list of allowed values: exactly these
    step: float | None = None      # numeric range levers: allowed values are low + k * step
    integer: bool = False          # whole numbers only

    @property
    def categorical(self) -> bool:
        return bool(self.options)

    @property
    def effective_step(self) -> float | None:
        """The lattice spacing of a range lever: its step, else 1 for integer levers, else None (continuous)."""
        return self.step if self.step else (1.0 if self.integer else None)

    def allows(self, value) -> bool:
        """Whether the lever may be set to `value`."""
        if self.categorical:
            return str(value) in self.options
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        if not np.isfinite(v):
            return False
        if self.values:
            return any(abs(v - x) <= 1e-9 * max(1.0, abs(x)) for x in self.values)
        if self.low is None or v < self.low - 1e-9 or v > self.high + 1e-9:
            return False
        if self.integer and abs(v - round(v)) > 1e-9:
            return False
        s = self.effective_step
        return s is None or abs((v - self.low) / s - round((v - self.low) / s)) <= 1e-6

    def allowed_text(self) -> str:
        """What the lever may be set to, in words (for error messages and controls)."""
        def fmt(x):
            return f"{x:g}"
        if self.categorical:
            return f"one of {list(self.options)}"
        if self.values:
            return "one of [" + ", ".join(fmt(v) for v in self.values) + "]"
        s = self.effective_step
        what = "whole numbers" if self.integer and (s is None or s == 1) else (f"steps of {fmt(s)}" if s else "any value")
        return f"{what} from {fmt(self.low)} to {fmt(self.high)}"

    def _lattice(self, lo: float, hi: float, n: int) -> list[float]:
        """Up to `n` allowed values in [lo, hi], spread evenly, extremes included."""
        if self.values:
            inside = [float(v) for v in self.values if lo - 1e-9 <= v <= hi + 1e-9]
            if len(inside) <= n:
                return inside
            return [inside[i] for i in sorted(set(np.round(np.linspace(0, len(inside) - 1, n)).astype(int)))]
        s = self.effective_step
        if s is None:
            return [float(v) for v in np.unique(np.round(np.linspace(lo, hi, n), 6))]
        k_lo, k_hi = int(np.ceil((lo - self.low) / s - 1e-9)), int(np.floor((hi - self.low) / s + 1e-9))
        if k_hi < k_lo:
            return []
        ks = np.unique(np.round(np.linspace(k_lo, k_hi, min(n, k_hi - k_lo + 1))).astype(int))
        return [float(np.round(self.low + k * s, 9)) for k in ks]

    def grid(self, current, n: int = 5) -> list:
        """Candidate settings for a plan search: allowed values on the risk-lowering side of `current` (both sides
        when the direction is unknown), at most `n` of them, never `current` itself."""
        if self.categorical:  # only customers whose value is one of the lever's values can move along it
            return [o for o in self.options if o != current] if current in self.options else []
        if current is None or np.isnan(current):  # e.g. no tickets: nothing to resolve faster
            return []
        lo, hi = self.low, self.high
        if self.direction > 0:
            hi = min(hi, current)
        elif self.direction < 0:
            lo = max(lo, current)
        if hi < lo:
            return []
        return [v for v in self._lattice(lo, hi, n) if abs(v - current) > 1e-9]


@dataclass(frozen=True)
class LeverCost:
    """What pulling a lever for one customer costs, in money: fixed + per_unit x |change of the primary|."""

    fixed: float = 10.0
    per_unit: float = 0.0

    def __call__(self, change: float) -> float:
        return self.fixed + self.per_unit * abs(change)


def levers(registry: FeatureRegistry) -> list[Lever]:
    """The registry's actionable features, grouped by signal (`<signal>__<agg>_<window>`), in registry order."""
    groups: dict[str, list] = {}
    for f in registry.actionable():
        groups.setdefault(f.name.split("__")[0], []).append(f)
    out = []
    for name, feats in groups.items():
        p = feats[0]
        values = tuple(float(v) for v in (getattr(p, "values", None) or ()))
        if not p.categorical and p.valid_range is None and not values:
            raise ValueError(f"feature registry: actionable feature {p.name!r} needs a valid range or allowed values for "
                             "what-if controls (mapping: [actionable] name = [values] or {min = , max = , step = })")
        if p.categorical:
            lo = hi = None
        elif values:
            lo, hi = min(values), max(values)
        else:
            lo, hi = float(p.valid_range[0]), float(p.valid_range[1])
        options = tuple(str(o) for o in (p.valid_range or ())) if p.categorical else ()
        out.append(Lever(name, p.pillar, p.name, tuple(f.name for f in feats[1:]), p.description, p.unit, lo, hi,
                         p.direction, options, tuple(sorted(values)), getattr(p, "step", None), bool(getattr(p, "integer", False))))
    return out


def apply_levers(frame: pl.DataFrame, settings: dict, registry: FeatureRegistry) -> pl.DataFrame:
    """A copy of `frame` with levers set: {lever name: new primary value}. Linked features scale by the same ratio.

    A value the lever does not allow (outside its range, off its step, not among its values, a
    fraction of a whole-number lever) is a ValueError naming the lever, the value and what is
    allowed; setting a lever to the value a row already has is always allowed. Unknown lever names
    are a KeyError.
    """
    by_name = {lv.name: lv for lv in levers(registry)}
    unknown = [k for k in settings if k not in by_name]
    if unknown:
        raise KeyError(f"unknown lever(s) {unknown}; actionable levers are {sorted(by_name)}")
    out = frame.clone()
    for name, value in settings.items():
        out = _set_lever(out, by_name[name], [value] * frame.height, registry)
    return out


def _set_lever(frame: pl.DataFrame, lv: Lever, values: list, registry: FeatureRegistry) -> pl.DataFrame:
    """Row i's lever set to values[i] (None: unchanged, every feature exactly as it was); linked features scaled by
    new/old of the primary and clipped to their own valid range (derived values only; the primary is never clipped)."""
    if lv.categorical:
        bad = {str(v) for v in values if v is not None} - set(lv.options)
        if bad:
            raise ValueError(f"lever {lv.name!r}: {sorted(bad)} not allowed; allowed: {lv.allowed_text()}")
        new = pl.Series([None if v is None else str(v) for v in values], dtype=pl.String)
        return frame.with_columns(pl.coalesce(new.cast(frame.schema[lv.primary]), pl.col(lv.primary)).alias(lv.primary))
    old = frame[lv.primary].cast(pl.Float64).to_numpy().astype(float)
    req = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    changed = np.array([v is not None for v in values]) & ~(req == old)   # same value as now: no change
    bad = sorted({float(r) for r, c in zip(req, changed, strict=True) if c and not lv.allows(r)})
    if bad:
        shown = ", ".join(f"{b:g}" for b in bad[:3])
        raise ValueError(f"lever {lv.name!r} ({lv.primary}): {shown} not allowed; allowed: {lv.allowed_text()}")
    if not changed.any():
        return frame
    new = np.where(changed, req, old)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(changed & (old > 0), new / old, np.nan)   # no ratio from 0 or unknown: linked features stay

    def keep_unless(mask: np.ndarray, col: str, value: np.ndarray) -> pl.Expr:   # rows outside `mask` stay bit-identical
        dtype = frame.schema[col]
        whole = dtype.is_integer() and bool(np.all(value[mask] == np.round(value[mask])))
        target = dtype if dtype.is_float() or whole else pl.Float64
        return pl.when(pl.Series(mask)).then(pl.Series(value).fill_nan(None).cast(target)).otherwise(pl.col(col).cast(target)).alias(col)

    cols = [keep_unless(changed, lv.primary, new)]
    scaled_rows = ~np.isnan(ratio)
    for f in lv.linked:
        lo, hi = registry[f].valid_range or (-np.inf, np.inf)
        base = frame[f].cast(pl.Float64).to_numpy().astype(float)
        cols.append(keep_unless(scaled_rows, f, np.clip(base * ratio, lo, hi)))
    return frame.with_columns(cols)


def change_points(after, before):
    """The change in churn risk from `before` to `after`, in percentage points, with float noise set to zero.

    The same row scored in batches of different sizes can differ in the last bits (SIMD lanes), and by
    CPU; a change below 1e-9 points is that noise, not an effect, and would otherwise break ties at random.

    >>> change_points(0.30, 0.25), change_points(0.25, 0.25 + 2e-17)
    (5.0, 0.0)
    """
    out = np.round(100 * (np.asarray(after, dtype=float) - np.asarray(before, dtype=float)), 9) + 0.0
    return float(out) if out.ndim == 0 else out


ASSOCIATION = "model association (what the churn model predicts), not a causal effect"  # how every model what-if is labelled


@dataclass
class WhatIf:
    """Risk, pillar contributions and reasons before and after a set of lever changes, for one customer."""

    customer: str
    settings: dict
    risk_before: float
    risk_after: float
    pillars: pl.DataFrame                  # pillar, label, before, after (log-odds contributions)
    reasons: pl.DataFrame                  # reason codes after the change
    explanation: object = field(repr=False, default=None)   # shap.Explanation of the pillars, after
    causal: pl.DataFrame | None = None     # per simulator-style lever: causal effect in points with a 95% interval

    @property
    def change_points(self) -> float:
        return change_points(self.risk_after, self.risk_before)

    def summary(self) -> str:
        """The model's answer, labelled as an association; causal estimates (if given) beside it, labelled as such."""
        if not self.settings:
            head = f"{self.customer}: churn risk {self.risk_before:.1%}"
        else:
            head = (f"{self.customer}: churn risk {self.risk_before:.1%} -> {self.risk_after:.1%} "
                    f"({self.change_points:+.1f} points; {ASSOCIATION})")
        lines = [head]
        if self.causal is not None:
            from trustml.causal import CAUSAL_LEVERS
            lines += [f"  causal estimate (double machine learning, not the model) of '{CAUSAL_LEVERS[r['lever']].description}': "
                      f"{r['causal_points']:+.2f} points [95% {r['ci_low_points']:+.2f}, {r['ci_high_points']:+.2f}]"
                      for r in self.causal.iter_rows(named=True)]
        return "\n".join(lines)


def _pillar_values(trained: TrainedModel, frame: pl.DataFrame):
    from trustml.explanations import explain, pillar_explanation
    expl = explain(trained, frame)
    return expl, pillar_explanation(expl, trained.registry)


def what_if(trained: TrainedModel, row: pl.DataFrame, settings: dict, *, id_column: str = "customer_id",
            effects: dict | None = None, events: pl.DataFrame | None = None) -> WhatIf:
    """Re-score one customer (a one-row frame) with levers set; explain before and after by pillar.

    The re-scored risk is a *model association*. With `effects` (`trustml.causal.lever_effects`) and the
    event log, the customer's causal lever effects (with 95% intervals) come beside it in `.causal`.
    """
    from trustml.explanations import reason_codes
    if row.height != 1:
        raise ValueError(f"what_if takes one customer row, got {row.height}")
    after = apply_levers(row, settings, trained.registry)
    both = pl.concat([row, after], how="vertical_relaxed")
    expl, pe = _pillar_values(trained, both)
    risk = trained.predict_risk(both)
    reg = trained.registry
    pillars = pl.DataFrame({"pillar": reg.pillars, "label": [PILLARS[p].label for p in reg.pillars],
                            "before": pe.values[0], "after": pe.values[1]})
    customer = pseudonymise([row[id_column][0]])[0] if id_column in row.columns else "customer"
    reasons = reason_codes(trained, after, expl[1:2], id_column=id_column)
    causal = None
    if effects and events is not None:
        from trustml.causal import causal_for_rows
        causal = causal_for_rows(effects, row, events, id_column=id_column).drop("customer", "snapshot_date")
    return WhatIf(customer, dict(settings), float(risk[0]), float(risk[1]), pillars, reasons, pe[1], causal)


def _candidates(lvs: list[Lever], row: pl.DataFrame, max_levers: int, grid: int) -> list[dict]:
    per = [[(lv.name, v) for v in lv.grid(row[lv.primary][0], grid)] for lv in lvs]
    combos: list[dict] = [{}]
    for k in range(1, max_levers + 1):
        for group in itertools.combinations(per, k):
            combos.extend(dict(c) for c in itertools.product(*group))
    return combos


def _score_candidates(trained, row, lvs, costs, max_levers, grid):
    """Every candidate plan for one customer as one frame (row 0 = no change), scored in one call."""
    combos = _candidates(lvs, row, max_levers, grid)
    frame = pl.concat([row] * len(combos), how="vertical")
    for lv in lvs:
        frame = _set_lever(frame, lv, [c.get(lv.name) for c in combos], trained.registry)
    risk = trained.predict_risk(frame)
    by_name = {lv.name: lv for lv in lvs}
    cost = np.array([sum(costs.get(k, LeverCost())(0.0 if by_name[k].categorical else v - (row[by_name[k].primary][0] or 0.0))
                         for k, v in c.items()) for c in combos])
    return combos, risk, cost


def cheapest_plan(trained: TrainedModel, row: pl.DataFrame, *, target: float, costs: dict | None = None,
                  max_levers: int = 3, grid: int = 5, effects: dict | None = None, events: pl.DataFrame | None = None) -> dict:
    """The cheapest set of lever changes that brings this customer's risk below `target`.

    Searches every combination of up to `max_levers` levers, each over `grid` settings within
    its valid range on the risk-lowering side (both sides when the registry says the direction
    is unknown). Cost per lever: `costs[name]` (a `LeverCost`), default `LeverCost()`.
    Returns {'settings', 'risk_before', 'risk_after', 'cost', 'reached', 'kind'}; when no plan
    reaches the target, the lowest-risk plan found, with reached=False. `kind` says what the risk after is:
    a model association, or (with `effects` and `events`) a causal estimate of one simulator-style lever's policy.
    """
    costs = costs or {}
    if effects and events is not None:
        from trustml.causal import causal_for_rows
        c = causal_for_rows(effects, row, events)
        r0 = float(trained.predict_risk(row)[0])
        cand = [(r["lever"], costs.get(r["lever"], LeverCost()).fixed, r0 + r["causal_points"] / 100,
                 (r["ci_low_points"], r["ci_high_points"])) for r in c.iter_rows(named=True)]
        ok = [x for x in cand if x[2] < target]
        lever, cost, after, ci = min(ok, key=lambda x: (x[1], x[2])) if ok else min(cand, key=lambda x: x[2])
        return {"settings": {lever: "policy"}, "risk_before": r0, "risk_after": after, "cost": cost, "reached": bool(ok),
                "kind": "causal estimate (double machine learning)", "ci_points": ci}
    lvs = levers(trained.registry)
    combos, risk, cost = _score_candidates(trained, row, lvs, costs, max_levers, grid)
    ok = np.nonzero(risk < target)[0]
    if ok.size:
        best = ok[np.lexsort((risk[ok], cost[ok]))[0]]
    else:
        best = int(np.lexsort((cost, risk))[0])
    return {"settings": combos[best], "risk_before": float(risk[0]), "risk_after": float(risk[best]),
            "cost": float(cost[best]), "reached": bool(ok.size), "kind": "model association (not a causal effect)"}


def describe_settings(settings: dict, row: pl.DataFrame, registry: FeatureRegistry) -> str:
    """'promise broken: 2 -> 0; resolution hours: 50 -> 12' for a plan."""
    if not settings:
        return "no change"
    lv = {x.name: x for x in levers(registry)}
    parts = []
    for k, v in settings.items():
        old = row[lv[k].primary][0]
        fmt = (lambda x: str(x)) if lv[k].categorical else (lambda x: "n/a" if x is None else f"{x:,.3g}")
        parts.append(f"{lv[k].primary}: {fmt(old)} -> {fmt(v)}")
    return "; ".join(parts)


def campaign(trained: TrainedModel, frame: pl.DataFrame, value, *, top_n: int = 100, costs: dict | None = None,
             max_levers: int = 2, grid: int = 5, id_column: str = "customer_id", effects: dict | None = None,
             events: pl.DataFrame | None = None) -> pl.DataFrame:
    """The top-N at-risk customers, each with the action of highest expected value, ranked.

    expected_value = (risk before - risk after) x customer value - cost of the action, in
    money; 'no action' (value 0) wins when nothing pays. `value`: one number per row of `frame`.
    Risk after is the model's association by default; with `effects` (`trustml.causal.lever_effects`)
    and the event log, actions are ranked by their causal effect instead (`trustml.causal.causal_campaign`).
    The `effect_kind` column says which. Ids are pseudonymised. Write it out with `.write_csv()` or `.write_parquet()`.
    """
    if effects and events is not None:
        from trustml.causal import causal_campaign
        out = causal_campaign(effects, frame, events, trained.predict_risk(frame), value,
                              costs={k: c.fixed for k, c in (costs or {}).items()}, top_n=top_n, id_column=id_column)
        return out.with_columns(effect_kind=pl.lit("causal estimate (double machine learning)"))
    costs = costs or {}
    if id_column in frame.columns and frame[id_column].n_unique() < frame.height:
        raise ValueError(f"campaign: {id_column} repeats ({frame.height} rows for {frame[id_column].n_unique()} customers); "
                         "pass one row per customer, e.g. the latest snapshot")
    value = np.broadcast_to(np.asarray(value, dtype=float), (frame.height,))
    risk = trained.predict_risk(frame)
    top = np.argsort(-risk, kind="stable")[:top_n]
    lvs = levers(trained.registry)
    rows = []
    ids = pseudonymise(frame[id_column].gather(top).to_list()) if id_column in frame.columns else [str(i) for i in top]
    for rank, (i, cid) in enumerate(zip(top, ids, strict=True), 1):
        row = frame[int(i)]
        combos, r, c = _score_candidates(trained, row, lvs, costs, max_levers, grid)
        ev = (r[0] - r) * value[i] - c
        ev[0] = 0.0  # no action
        b = int(np.lexsort((c, -ev))[0])
        rows.append({"rank": rank, "customer": cid, "risk": float(r[0]), "customer_value": float(value[i]),
                     "action": describe_settings(combos[b], row, trained.registry),
                     "pillars": ", ".join(sorted({PILLARS[x.pillar].label for x in lvs if x.name in combos[b]})) or "-",
                     "risk_after": float(r[b]), "risk_reduction_points": change_points(r[0], r[b]),
                     "cost": float(c[b]), "expected_value": float(ev[b])})
    out = pl.DataFrame(rows, schema_overrides={"cost": pl.Float64, "expected_value": pl.Float64})
    return (out.sort("expected_value", descending=True, maintain_order=True)
            .with_columns(rank=pl.int_range(1, pl.len() + 1), effect_kind=pl.lit("model association (not a causal effect)")))


# --- what-if vs the simulator's truth ---------------------------------------------------------

SIMULATOR_LEVERS = {
    # pillar: the simulator policy of `explanations.LEVERS`, as a feature change the model can see
    "promises": lambda row: {"promise_broken": 0},
    "empathy": lambda row: {"empathy_score": min((row["empathy_score__mean_180d"][0] or 3.0) + 1, 5.0)},
    "respect_for_time": lambda row: {"marketing_contact": min(row["marketing_contact__count_30d"][0], 1)},
    "transparency": lambda row: {"price_change_unannounced": 0},
    "service_quality": lambda row: ({} if row["resolution_hours__mean_90d"][0] is None
                                    else {"resolution_hours": max(row["resolution_hours__mean_90d"][0] / 3, 0.5)}),
}


def whatif_vs_truth(trained: TrainedModel, frame: pl.DataFrame, *, n_customers: int, n_months: int, seed: int,
                    top_n: int = 200, effects: pl.DataFrame | None = None) -> dict:
    """The model's what-if effect of each simulator lever beside the true effect, for the top-N at-risk rows.

    Model effect: change in predicted risk after the equivalent feature change. True effect: the
    simulator's change in churn probability under the policy (common random numbers); a row whose
    customer had already left in a policy's world has no effect for it and is left out. Returns
    {'effects': per customer x lever, 'by_lever': Spearman and mean effects per lever,
    'best_lever_agreement': share of customers whose best lever is the same}. `effects`: the simulator's
    `true_effects` of the `explanations.LEVERS` policies when already computed (else simulated here).
    """
    from scipy.stats import spearmanr

    from trustml.explanations import LEVERS
    from trustml.simulator import Policy, true_effects
    risk = trained.predict_risk(frame)
    top = np.argsort(-risk, kind="stable")[:top_n]
    sub = frame[top]
    names = [p for p in SIMULATOR_LEVERS if any(lv.pillar == p for lv in levers(trained.registry))]
    eff = effects if effects is not None else true_effects(n_customers, n_months, seed, {p: Policy(**LEVERS[p]) for p in names})
    keys = sub.select("customer_id", pl.col("snapshot_date").alias("month_start"))
    truth = keys.join(eff, on=["customer_id", "month_start"], how="left", maintain_order="left")
    rows = []
    for i in range(sub.height):
        row = sub[i]
        after = [apply_levers(row, SIMULATOR_LEVERS[p](row), trained.registry) for p in names]
        r = trained.predict_risk(pl.concat([row, *after], how="vertical_relaxed"))
        for k, p in enumerate(names):
            if truth[f"effect_{p}"][i] is None:  # gone earlier in that policy's world: no effect to compare
                continue
            rows.append({"customer": pseudonymise([row["customer_id"][0]])[0], "lever": p,
                         "model_points": change_points(r[k + 1], r[0]), "true_points": change_points(truth[f"effect_{p}"][i], 0.0)})
    effects = pl.DataFrame(rows)
    by_lever = []
    for p in names:
        e = effects.filter(pl.col("lever") == p)
        rho = spearmanr(e["model_points"], e["true_points"]).statistic if e["true_points"].std() > 0 and e["model_points"].std() > 0 else float("nan")
        by_lever.append({"lever": p, "label": PILLARS[p].label, "model_mean_points": e["model_points"].mean(),
                         "true_mean_points": e["true_points"].mean(), "spearman": float(rho)})
    best = effects.group_by("customer", maintain_order=True).agg(
        pl.col("lever").sort_by("model_points", maintain_order=True).first().alias("model_best"),
        pl.col("lever").sort_by("true_points", maintain_order=True).first().alias("true_best"))
    return {"effects": effects, "by_lever": pl.DataFrame(by_lever),
            "best": best.with_columns(agree=pl.col("model_best") == pl.col("true_best")),
            "best_lever_agreement": float((best["model_best"] == best["true_best"]).mean())}
