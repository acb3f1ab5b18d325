"""Causal lever effects from observational data: double machine learning, checked against the simulator.

The churn model's what-if answers "what would the model say if this feature had another
value?": an association. This module estimates *effects*.

Estimand
--------
For a lever (e.g. "keep every promise"), and a customer-snapshot row (customer active at the
snapshot date ``d``):

    tau_i = P(churn in [d, d + horizon) | the lever's events had been as the policy makes them)
            - P(churn in [d, d + horizon) | as observed)

The lever acts on its *exposure*: a recency-weighted sum over the customer's events of that
kind before ``d`` (weight ``0.5 ** (age_days / half_life_days)``, last 365 days), e.g. broken
promises, or agent empathy scores minus 3. The policy's exposure is the same sum with each
event as the policy makes it (no promise broken; every empathy score one point higher, a 5 too:
the score is capped, the experience is not; resolution hours divided by 3; no marketing contact
beyond the first in a calendar month; no price change unannounced). With a partially linear model ``Y = theta(x) . T + g(x) + e`` (T: the exposure components),
``tau_i = theta(x_i) . (T_policy,i - T_i)`` and the average effect is the mean of ``tau_i`` over
the rows. Assumptions: no unobserved confounding given the controls (every feature except the
lever's own and its known mediators: referrals, CSAT, reopened tickets; plus every lever's
*revealed traits*, `lever_traits`: e.g. how often the customer engages with a contact in busy
months, how many tickets and promises they had), overlap (the exposure is not a deterministic function of the
controls; `overlap` measures it), and effects linear in the exposure for one customer.

Survivor selection: the rows are customers still active at ``d``. Customers contacted a lot who
stayed are those who tolerate contact, so among survivors heavy exposure goes with a hidden trait
that lowers churn, and the features alone make the lever look weaker than it is. The revealed
traits measure such traits from the customer's own behaviour (a contact-averse customer ignores
extra contacts), which is what corrects it (`lever_effect(..., traits=False)` shows the estimate
without them).

A revealed trait must not encode the treatment itself. Traits are computed from the very events
the policy changes (tolerance shows only when contacts exceed it), so a trait that moves with *how
many* contacts came is a bad control: e.g. an engagement share per time rank of the month (1st,
2nd, .. 4th) is null or not, and shifts, with the month's count (the 4th contact of a month exists
only where 4 came), so conditioning on it absorbs the realised exposure and leaves residual
variation that survivor selection distorts (on the simulator respect for time came out far too
large; `benchmarks/causal_truth.py`). The traits here are count-free (one share over all contacts in months
of 2+ contacts) or invariant under the policy (months with any contact), and use only calendar
months that ended by the snapshot date.

Estimator: EconML's `LinearDML` residualises churn and the exposure on the controls with LightGBM
(one thread, seeded), cross-fitted with folds grouped by customer (no customer in two folds). The
final stage (ours, on EconML's residuals) regresses churn residuals on exposure residuals and on
exposure residuals x cross-fitted baseline risk (a trust change moves churn probability more where
churn is likelier), with a covariance clustered by customer. Per-row effects and averages over any
rows follow, with 95% intervals. `overlap` checks the propensity of any exposure. On the simulator,
`simulator_truth` gives the true ``tau_i`` for the same rows (common random numbers: the policy
applied to the whole history, the label-window churn probability compared).

Examples
--------
>>> from trustml.simulator import simulate
>>> from trustml.features import build_features, Snapshots
>>> w = simulate(1500, 15, seed=4)
>>> table = build_features(w.customers, w.events, Snapshots())
>>> exp = exposures(table.labelled(), w.events, CAUSAL_LEVERS["promises"])
>>> bool((exp["policy"] <= exp["observed"]).all())
True
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from trustml.features import FeatureRegistry
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise

__all__ = ["CausalLever", "CAUSAL_LEVERS", "LeverEffect", "exposures", "revealed_traits", "lever_traits", "controls_for", "overlap", "lever_effect",
           "lever_effects", "crossfit_folds", "simulator_truth", "causal_vs_truth", "causal_for_rows", "MODEL_SETTINGS", "SegmentWhatIf",
           "segment_what_if", "causal_campaign", "NUISANCE_PARAMS", "save_effects", "load_effects"]

# LightGBM nuisance models: small trees. 100 rounds at 0.12 estimate as well as 200 at 0.06 in a third less time
# (`benchmarks/causal_truth.py --no-model --max-rows 60000`, seeds 0-2: largest errors vs truth 15.9/7.5/30.2% against
# 15.7/5.7/33.3%, the truth inside every interval; docs/scale.md)
NUISANCE_PARAMS = dict(n_estimators=100, learning_rate=0.12, num_leaves=8, min_child_samples=100,
                       colsample_bytree=0.7, subsample=0.8, subsample_freq=1, reg_lambda=1.0, n_jobs=1, verbose=-1)


@dataclass(frozen=True)
class CausalLever:
    """A lever as the data shows it: which events it changes, and how the policy changes each one.

    exposure / counterfactual: polars expressions of the event's columns ``value`` and
    ``month_rank`` (1 = the customer's first event of this type in that calendar month), giving
    each event's contribution to the exposure as observed and under the policy.
    affected: feature stems (name before ``__``) the policy changes; mediators: stems downstream of
    trust. Both are left out of the controls. policy: the simulator `Policy` fields that pull the
    lever (used only to check the estimate against truth).
    """

    pillar: str
    events: tuple[str, ...]
    exposure: Callable[[], pl.Expr]
    counterfactual: Callable[[], pl.Expr]
    affected: tuple[str, ...]
    description: str
    policy: dict = field(default_factory=dict)
    mediators: tuple[str, ...] = ("referral_given",)
    unit: str = "events (recency-weighted)"
    # revealed traits: (name, numerator, denominator) expressions of the same event columns (and ``month_count``),
    # giving per-customer rates over the window's complete months (unweighted; a denominator of None: the plain
    # count) used as extra controls, e.g. the share of contacts in busy months the customer engaged with: what they
    # welcome, revealed by their own behaviour (null when never seen). They must not encode the exposure's amount
    revealed: Callable[[], list[tuple[str, pl.Expr, pl.Expr | None]]] = field(default=lambda: [])
    # event types the policy does not change whose recency-weighted count (same weights as the exposure) is a
    # control: how much of the lever's situation the customer had (tickets, promises made, price changes), so
    # the exposure's coefficient compares customers with as many tickets, but handled differently
    volume: tuple[str, ...] = ()


def _multi() -> pl.Expr:
    return (pl.col("month_count") >= 2).cast(pl.Float64)


def _engaged() -> pl.Expr:
    return pl.col("value").fill_null(0).cast(pl.Float64)


CAUSAL_LEVERS: dict[str, CausalLever] = {
    "promises": CausalLever(
        "promises", ("promise_broken",), lambda: [pl.lit(1.0)], lambda: [pl.lit(0.0)],
        ("promise_broken", "promise_kept"), "keep every promise (no promise broken)", {"keep_promises": True},
        volume=("promise_made",)),
    "empathy": CausalLever(
        "empathy", ("empathy_score",), lambda: [pl.col("value") - 3.0],
        # a contact scored 5 can still be better: the score is capped, the experience is not (linear beyond the scale)
        lambda: [pl.col("value") + 1.0 - 3.0],
        ("empathy_score", "csat_score"), "every support contact one empathy point better",
        {"empathy_boost": 1.0}, unit="empathy points above 3 (recency-weighted)", volume=("ticket_opened",)),
    # contact fatigue is not linear: the 2nd contact of a month is welcome to most, the 4th to few, and a
    # contact the customer ignored hints it was one too many; so rank x engagement are separate exposures
    "respect_for_time": CausalLever(
        "respect_for_time", ("marketing_contact",),
        lambda: [((pl.col("month_rank") >= lo) & (pl.col("month_rank") <= hi) & (pl.col("value").fill_null(0) == engaged)).cast(pl.Float64)
                 for lo, hi in ((2, 3), (4, 99)) for engaged in (1, 0)],
        lambda: [pl.lit(0.0)] * 4,
        # affected: every feature the cap changes: contacts (counts, rates), engaged contacts, the engagement share
        ("marketing_contact", "marketing_engaged", "marketing_engagement"), "at most one marketing contact a month",
        {"max_marketing_per_month": 1}, unit="2nd-3rd and 4th+ contacts of a month, engaged / ignored (recency-weighted)",
        # traits that do not encode how many contacts came (that is the treatment itself: a share per time rank or per
        # month count is null or not, and shifts, with the counts): the share of contacts engaged with in months of 2+
        # contacts (tolerance: the contact-averse ignore extra contacts), and the months with any contact (the
        # contact rate as the policy leaves it: a cap keeps each month's first contact)
        revealed=lambda: [("multi_contact_engagement", _multi() * _engaged(), _multi()),
                          ("contact_months", (pl.col("month_rank") == 1).cast(pl.Float64), None)]),
    "transparency": CausalLever(
        "transparency", ("price_change_unannounced",), lambda: [pl.lit(1.0)], lambda: [pl.lit(0.0)],
        ("price_change_unannounced", "price_change_announced"), "announce every price change",
        {"announce_price_changes": True}, volume=("price_change_announced", "price_change_unannounced")),
    # first-day resolution (the usual service-level target) and slow (> 3 days) resolutions
    "service_quality": CausalLever(
        "service_quality", ("ticket_resolved",),
        lambda: [(pl.col("value") < 24).cast(pl.Float64), (pl.col("value") > 72).cast(pl.Float64)],
        lambda: [(pl.col("value") / 3.0 < 24).cast(pl.Float64), (pl.col("value") / 3.0 > 72).cast(pl.Float64)],
        ("resolution_hours", "ticket_reopened", "csat_score"), "resolve tickets three times faster",
        {"resolution_speedup": 3.0}, unit="tickets resolved within a day; after 3 days (recency-weighted)",
        volume=("ticket_opened",)),
}


def exposures(frame: pl.DataFrame, events: pl.DataFrame, lever: CausalLever, *, half_life_days: float = 60.0,
              window_days: int = 365, id_column: str = "customer_id") -> pl.DataFrame:
    """The lever's exposure per row of `frame` (customer, snapshot_date): as observed and under the policy.

    Point in time: only events strictly before the snapshot date count. Returns `frame`'s keys
    with ``observed_k`` and ``policy_k`` per exposure component k (0 when the customer had no
    such event), and their sums ``observed`` and ``policy``.
    """
    obs, pol = lever.exposure(), lever.counterfactual()
    k = range(len(obs))
    out = _event_sums(frame, events, lever.events, [*obs, *pol], half_life_days=half_life_days, window_days=window_days,
                      id_column=id_column)
    out = out.rename({**{f"_s{i}": f"observed_{i}" for i in k}, **{f"_s{len(obs) + i}": f"policy_{i}" for i in k}})
    return out.with_columns(observed=pl.sum_horizontal([f"observed_{i}" for i in k]),
                            policy=pl.sum_horizontal([f"policy_{i}" for i in k]))


def revealed_traits(frame: pl.DataFrame, events: pl.DataFrame, lever: CausalLever, *, half_life_days: float = 60.0,
                    window_days: int = 365, id_column: str = "customer_id") -> pl.DataFrame:
    """The lever's own extra controls per row: revealed per-customer traits and the volume of its situation.

    ``revealed_<name>``: unweighted rates (or counts) over the lever's events in calendar months
    that ended by the snapshot date, within `window_days` (e.g. the share of contacts the customer
    engaged with in months of 2+ contacts: what they welcome, revealed by their behaviour), null
    where the customer had no such event.
    ``revealed_volume``: the recency-weighted count of `lever.volume` events (which the policy does
    not change), weighted like the exposure. Used as extra controls by `lever_effect`.
    """
    out = frame.select(id_column, "snapshot_date")
    rev = lever.revealed()
    if rev:
        exprs = [e for _, num, den in rev for e in (num, pl.lit(1.0) if den is None else den)]
        sums = _event_sums(frame, events, lever.events, exprs, half_life_days=None, window_days=window_days, id_column=id_column,
                           complete_months=True)
        num, den = (lambda j: pl.col(f"_s{2 * j}")), (lambda j: pl.col(f"_s{2 * j + 1}"))
        out = out.with_columns(sums.select(*[
            (num(j) if d is None else pl.when(den(j) > 0).then(num(j) / den(j)).otherwise(None)).alias(f"revealed_{name}")
            for j, (name, _, d) in enumerate(rev)]))
    if lever.volume:
        vol = _event_sums(frame, events, lever.volume, [pl.lit(1.0)], half_life_days=half_life_days, window_days=window_days,
                          id_column=id_column)
        out = out.with_columns(revealed_volume=vol["_s0"])
    return out


def lever_traits(frame: pl.DataFrame, events: pl.DataFrame, *, half_life_days: float = 60.0, window_days: int = 365,
                 id_column: str = "customer_id", levers=None) -> pl.DataFrame:
    """Every causal lever's `revealed_traits` whose events the data has, per row, named ``<lever>__revealed_<name>``.

    Pre-existing per-customer traits that no other lever's policy changes (what contact a customer
    welcomes, how many tickets or promises they had), so every lever's effect is adjusted for all of
    them: among customers still active, they carry the survivor selection on hidden traits.
    `levers`: which levers' traits (default: those whose events the data has).
    """
    if levers is None:
        have = set(events["event_type"].unique().cast(pl.String).to_list())
        levers = [n for n, lv in CAUSAL_LEVERS.items() if set(lv.events) <= have]
    out = frame.select(id_column, "snapshot_date")
    for name, lever in CAUSAL_LEVERS.items():
        if name in levers:
            tr = revealed_traits(frame, events, lever, half_life_days=half_life_days, window_days=window_days, id_column=id_column)
            tr = tr.drop(id_column, "snapshot_date")
            out = out.with_columns(tr.rename({c: f"{name}__{c}" for c in tr.columns}))
    return out


def _of_types(events: pl.DataFrame, types) -> pl.Expr:
    """Rows of these event types; on an Enum column compared as Enum (no cast of millions of rows to strings)."""
    dtype = events.schema["event_type"]
    if isinstance(dtype, pl.Enum):
        known = set(dtype.categories.to_list())
        return pl.col("event_type").is_in(pl.Series([t for t in types if t in known], dtype=dtype).implode())
    return pl.col("event_type").cast(pl.String).is_in(list(types))


def _events_of(frame: pl.DataFrame, events: pl.DataFrame, id_column: str) -> pl.DataFrame:
    """The events of `frame`'s customers only (every exposure and trait is per customer): on a sample of customers
    the windowed sums then read a sample of the events, not all of them."""
    return events.filter(pl.col(id_column).is_in(frame[id_column].unique().implode()))


def _lever_event_types() -> set[str]:
    """Every event type any causal lever's exposure, traits or volume reads."""
    return {t for lv in CAUSAL_LEVERS.values() for t in (*lv.events, *lv.volume)}


def _event_sums(frame: pl.DataFrame, events: pl.DataFrame, types, exprs: list[pl.Expr], *, half_life_days: float | None,
                window_days: int, id_column: str, complete_months: bool = False) -> pl.DataFrame:
    """Per row of `frame`: sum over the customer's events of `types` before the snapshot date of each expression x weight.

    The expressions see ``value``, ``month_rank`` (1 = the customer's first event of the type in that
    calendar month) and ``month_count`` (the customer's events of the type in that calendar month).
    `complete_months`: count only events of calendar months that ended by the snapshot date (needed
    whenever an expression uses ``month_count``, which would otherwise see the rest of the month).
    """
    keys = frame.select(id_column, "snapshot_date").with_row_index("_row")
    k = range(len(exprs))
    month = [id_column, "event_type", pl.col("timestamp").dt.truncate("1mo")]
    ev = (events.lazy().filter(_of_types(events, types))
          .select(id_column, "timestamp", "value", pl.col("event_type").cast(pl.String))
          .with_columns(month_rank=pl.int_range(1, pl.len() + 1).over(*month, order_by="timestamp"),
                        month_count=pl.len().over(*month),
                        _month_end=pl.col("timestamp").dt.truncate("1mo").dt.offset_by("1mo"))
          .with_columns(*[e.alias(f"_e{i}") for i, e in enumerate(exprs)])
          .select(id_column, "timestamp", "_month_end", *[f"_e{i}" for i in k]))
    d = pl.col("snapshot_date").cast(pl.Datetime("us"))
    age = (d - pl.col("timestamp")).dt.total_seconds() / 86_400.0
    weight = pl.lit(1.0) if half_life_days is None else 0.5 ** (age / half_life_days)
    seen = (pl.col("_month_end") <= d) if complete_months else (pl.col("timestamp") < d)
    terms = (keys.lazy().join(ev, on=id_column, how="inner", maintain_order="left_right")   # each row's events together
             .filter(seen, pl.col("timestamp") < d, age <= window_days)
             .select("_row", *[(weight * pl.col(f"_e{i}")).cast(pl.Float64).fill_null(0.0).alias(f"_p{i}") for i in k])
             .sort("_row", maintain_order=True).collect())
    # each row's sum in its events' order, one row after another: the last bit of a float sum depends neither on
    # threads nor on which other customers' events are in the table (a parallel group-by's does)
    sums = np.zeros((keys.height, len(k)))
    row = terms["_row"].to_numpy()
    if len(row):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        for i in k:
            sums[row[starts], i] = np.add.reduceat(terms[f"_p{i}"].to_numpy(), starts)
    return keys.select(id_column, "snapshot_date", *[pl.Series(f"_s{i}", sums[:, i]) for i in k])


def controls_for(registry: FeatureRegistry, lever: CausalLever) -> list[str]:
    """The features a lever's effect is adjusted for: all but those the policy changes and its mediators."""
    drop = set(lever.affected) | set(lever.mediators)
    return [n for n in registry.names if n.split("__")[0] not in drop]


def _categories(frame: pl.DataFrame, names: list[str]) -> dict[str, list[str]]:
    return {n: sorted(frame[n].cast(pl.String).drop_nulls().unique().to_list()) for n in names
            if frame[n].dtype in (pl.String, pl.Categorical) or isinstance(frame[n].dtype, pl.Enum)}


def quiet_nuisance_notes() -> None:
    """Ignore EconML's note that the controls have missing values: on purpose (`allow_missing=True`), as the
    LightGBM nuisance models split on missing values. Call it inside a `warnings.catch_warnings()` block."""
    warnings.filterwarnings("ignore", message="Input contains NaN. Causal identification", category=UserWarning)


def _matrix(frame: pl.DataFrame, names: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    cols = []
    for n in names:
        s = frame[n]
        if n in categories:
            s = s.cast(pl.String).replace_strict(categories[n], list(range(len(categories[n]))), default=None, return_dtype=pl.Float64)
        cols.append(s.cast(pl.Float64).to_numpy())
    return np.column_stack(cols).astype(float)


def overlap(treatment: np.ndarray, controls: np.ndarray, groups: np.ndarray, *, seed: int = 0, folds: int = 3) -> dict:
    """Overlap check: the cross-fitted propensity of any exposure (exposure != 0) given the controls.

    Returns the share of rows exposed, the propensity's 1/25/50/75/99% quantiles and the share of
    rows with propensity below 0.01 or above 0.99 (where the data can say little about the
    effect), folds grouped by customer. Whether a row is exposed at all can be known from the
    controls (no customer with no busy month has a 2nd contact): such rows have no policy change
    and need no overlap. So the dose matters too: ``share_extreme_dose`` is the same share for the
    propensity of an exposure above the exposed rows' median, among exposed rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(600, 2)); t = (W[:, 0] + rng.normal(size=600) > 0).astype(float)
    >>> ov = overlap(t, W, np.arange(600) // 3)
    >>> 0.3 < ov["share_exposed"] < 0.7 and ov["share_extreme"] < 0.5
    True
    """
    import lightgbm as lgb
    from sklearn.model_selection import GroupKFold
    treatment = np.asarray(treatment, dtype=float)
    params = {**NUISANCE_PARAMS, "n_estimators": 100, "learning_rate": 0.1, "random_state": seed}

    def propensity(d, X, g):
        prop = np.full(d.shape, d.mean())
        if len(np.unique(g)) < folds:
            return prop
        for tr, te in GroupKFold(n_splits=folds).split(X, d, g):
            if 0 < d[tr].sum() < len(tr):
                prop[te] = lgb.LGBMClassifier(**params).fit(X[tr], d[tr]).predict_proba(X[te])[:, 1]
        return prop

    extreme = lambda p: float(np.mean((p < 0.01) | (p > 0.99))) if len(p) else float("nan")  # noqa: E731
    d = (np.abs(treatment) > 1e-9).astype(int)
    prop = propensity(d, controls, groups)
    exposed = d == 1
    dose = (treatment[exposed] > np.median(treatment[exposed])).astype(int) if exposed.any() else np.zeros(0, int)
    prop_dose = propensity(dose, controls[exposed], np.asarray(groups)[exposed]) if exposed.any() else np.zeros(0)
    q = np.quantile(prop, [0.01, 0.25, 0.5, 0.75, 0.99])
    return {"share_exposed": float(d.mean()), "propensity_quantiles": [float(x) for x in q],
            "share_extreme": extreme(prop), "share_extreme_dose": extreme(prop_dose)}


@dataclass
class LeverEffect:
    """A lever's estimated causal effect on label-window churn: the average with a 95% interval, per row.

    Effect of one unit of exposure component k for a row with baseline churn risk b (the
    cross-fitted outcome model's prediction): ``theta[k] + theta[K + k] * b`` (a change of trust
    moves churn probability more where churn is likelier). cov: the coefficients'
    customer-clustered covariance. `ate_on` gives the average and interval for any subset of rows.
    """

    pillar: str
    description: str
    theta: np.ndarray
    cov: np.ndarray
    per_row: pl.DataFrame            # customer_id, snapshot_date, exposures, baseline, effect (change in churn probability)
    overlap: dict
    controls: list[str]
    categories: dict = field(default_factory=dict, repr=False)
    outcome_models: list = field(default_factory=list, repr=False)   # cross-fitted churn models (baseline risk)

    @property
    def components(self) -> int:
        return len(self.theta) // 2

    def design(self, exp: pl.DataFrame, baseline: np.ndarray) -> np.ndarray:
        """Per row, the vector the coefficients multiply: [delta_k, delta_k * baseline]."""
        d = exp.select([pl.col(f"policy_{i}") - pl.col(f"observed_{i}") for i in range(self.components)]).to_numpy()
        return np.hstack([d, d * np.asarray(baseline)[:, None]])

    def baseline(self, frame: pl.DataFrame, events: pl.DataFrame | None = None, id_column: str = "customer_id") -> np.ndarray:
        """Baseline churn risk of new rows: the mean of the cross-fitted outcome models.

        `events` are needed when the controls include the lever's revealed traits (`revealed_traits`).
        """
        missing = [c for c in self.controls if c not in frame.columns]
        if missing:
            if events is None:
                raise ValueError(f"lever {self.pillar!r}: controls {missing} are computed from the events: pass events=")
            needed = sorted({c.split("__revealed_")[0] for c in missing if "__revealed_" in c})
            rev = lever_traits(frame, events, id_column=id_column, levers=needed)
            frame = pl.concat([frame, rev.select(missing)], how="horizontal")
        W = _matrix(frame, self.controls, self.categories)
        return np.mean([_churn_probability(m, W) for m in self.outcome_models], axis=0)

    def ate_on(self, mask=None) -> tuple[float, tuple[float, float]]:
        """Average effect over the rows where `mask` is true (default all), with its 95% interval."""
        d = self.design(self.per_row, self.per_row["baseline"].to_numpy())
        if mask is not None:
            d = d[np.asarray(mask, dtype=bool)]
        dbar = d.mean(axis=0) if len(d) else np.zeros(len(self.theta))
        ate = float(dbar @ self.theta)
        se = float(np.sqrt(max(dbar @ self.cov @ dbar, 0.0)))
        return ate, (ate - 1.959964 * se, ate + 1.959964 * se)

    @property
    def ate(self) -> float:
        return self.ate_on()[0]

    @property
    def ci(self) -> tuple[float, float]:
        return self.ate_on()[1]

    def summary(self) -> dict:
        ate, (lo, hi) = self.ate_on()
        return {"lever": self.pillar, "label": PILLARS[self.pillar].label, "policy": self.description,
                "causal_points": 100 * ate, "ci_low_points": 100 * lo, "ci_high_points": 100 * hi,
                "exposure_r2": self.overlap["exposure_r2"], "share_extreme_propensity": self.overlap["share_extreme"],
                "share_extreme_dose": self.overlap.get("share_extreme_dose", float("nan")),
                "rows": self.per_row.height}


def _churn_probability(model, W: np.ndarray) -> np.ndarray:
    """P(churn) from a fitted LGBMClassifier or a LightGBM Booster (binary objective) loaded from text."""
    return model.predict_proba(W)[:, 1] if hasattr(model, "predict_proba") else model.predict(W)


EFFECTS_FORMAT = "trustml.causal.effects/2"  # /2: count-free respect-for-time traits (controls named differently)


def save_effects(effects: dict[str, LeverEffect], folder) -> Path:
    """Write lever effects to `folder` without pickle: JSON (coefficients, covariance, controls, categories,
    overlap), parquet (per-row exposures, baseline and effects; ids pseudonymised) and LightGBM text (the
    cross-fitted outcome models that give new rows their baseline risk). `load_effects` reads it back.

    Examples
    --------
    >>> import tempfile
    >>> e = LeverEffect("promises", "keep every promise", np.array([-0.1, -0.2]), np.eye(2) * 1e-4,
    ...                 pl.DataFrame({"customer_id": ["A"], "observed_0": [1.0], "policy_0": [0.0], "baseline": [0.1]}),
    ...                 {"share_exposed": 0.5}, ["x"])
    >>> folder = save_effects({"promises": e}, tempfile.mkdtemp())
    >>> load_effects(folder)["promises"].ate == e.ate
    True
    """
    import json
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": EFFECTS_FORMAT, "levers": {}}
    for name, e in effects.items():
        models = []
        for k, m in enumerate(e.outcome_models):
            booster = m.booster_ if hasattr(m, "booster_") else m
            path = f"{name}.outcome_{k}.txt"
            (folder / path).write_text(booster.model_to_string())
            models.append(path)
        per_row = e.per_row
        if "customer_id" in per_row.columns:
            per_row = per_row.with_columns(customer_id=pl.Series(pseudonymise(per_row["customer_id"].cast(pl.String).to_list())))
        per_row.write_parquet(folder / f"{name}.per_row.parquet")
        meta["levers"][name] = {"pillar": e.pillar, "description": e.description, "theta": e.theta.tolist(),
                                "cov": e.cov.tolist(), "overlap": e.overlap, "controls": list(e.controls),
                                "categories": e.categories, "per_row": f"{name}.per_row.parquet", "outcome_models": models}
    (folder / "effects.json").write_text(json.dumps(meta, indent=1))
    return folder


def load_effects(folder) -> dict[str, LeverEffect]:
    """Read lever effects written by `save_effects` (same `ate_on`, `summary` and `causal_for_rows` answers)."""
    import json

    import lightgbm as lgb
    folder = Path(folder)
    path = folder / "effects.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no effects.json (write it with save_effects)")
    meta = json.loads(path.read_text())
    if meta.get("format") != EFFECTS_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {EFFECTS_FORMAT!r}")
    out = {}
    for name, d in meta["levers"].items():
        models = [lgb.Booster(model_str=(folder / p).read_text()) for p in d["outcome_models"]]
        out[name] = LeverEffect(d["pillar"], d["description"], np.asarray(d["theta"], dtype=float),
                                np.asarray(d["cov"], dtype=float).reshape(len(d["theta"]), len(d["theta"])),
                                pl.read_parquet(folder / d["per_row"]), d["overlap"], list(d["controls"]),
                                {k: list(v) for k, v in d["categories"].items()}, models)
    return out


def _dml_final(y_res: np.ndarray, t_res: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final DML stage: theta = (T'T)^-1 T'Y on cross-fitted residuals, covariance clustered by customer."""
    t_res = t_res.reshape(len(t_res), -1)
    bread = np.linalg.pinv(t_res.T @ t_res)
    theta = bread @ t_res.T @ y_res
    score = t_res * (y_res - t_res @ theta)[:, None]
    _, inv = np.unique(groups, return_inverse=True)
    meat_parts = np.zeros((inv.max() + 1, t_res.shape[1]))
    np.add.at(meat_parts, inv, score)
    n_g = len(meat_parts)
    cov = bread @ (meat_parts.T @ meat_parts) @ bread * n_g / max(n_g - 1, 1)
    return theta, cov


def crossfit_folds(frame: pl.DataFrame, *, folds: int = 3, seed: int = 0, id_column: str = "customer_id") -> list:
    """The cross-fitting folds of `lever_effect` on the labelled rows of `frame`: (train, test) row indices, grouped by
    customer and stratified by churn, exactly as EconML draws them for a discrete outcome (`StratifiedGroupKFold`,
    shuffled with the seed). They depend only on the rows, so `lever_effects` draws them once for every lever (about
    1 s a lever at 60,000 rows: the splitter loops over customers in Python).

    Examples
    --------
    >>> f = pl.DataFrame({"customer_id": [f"c{i // 2}" for i in range(60)], "churned": [i % 5 == 0 for i in range(60)]})
    >>> splits = crossfit_folds(f)
    >>> len(splits), sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(60))
    (3, True)
    """
    from econml.utilities import strata_from_discrete_arrays
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.utils import check_random_state
    frame = frame.filter(pl.col("churned").is_not_null())
    y = frame["churned"].cast(pl.Float64).to_numpy()
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=check_random_state(seed))
    return list(splitter.split(np.ones((len(y), 1)), strata_from_discrete_arrays([y]), groups=frame[id_column].to_numpy()))


def lever_effect(frame: pl.DataFrame, events: pl.DataFrame, registry: FeatureRegistry, lever: CausalLever | str, *,
                 folds: int = 3, seed: int = 0, half_life_days: float = 60.0, id_column: str = "customer_id",
                 traits: bool = True, splits: list | None = None) -> LeverEffect:
    """Double machine learning estimate of one lever's effect on label-window churn, on labelled rows of `frame`.

    EconML's `LinearDML` residualises churn and each exposure component on the controls with
    LightGBM (cross-fitted, folds grouped by customer); the final stage regresses churn residuals
    on exposure residuals (theta per unit of exposure) with a covariance clustered by customer (a
    customer has many snapshot rows). Per-row effect: ``(policy - observed) @ theta``. Controls: the
    features (`controls_for`) and, with `traits` (default), every lever's revealed per-customer
    traits (`lever_traits`); ``traits=False`` measures what they correct (survivor selection). splits: the folds
    (`crossfit_folds` of these rows, drawn here when None).
    """
    import lightgbm as lgb
    from econml.dml import LinearDML
    from sklearn.multioutput import MultiOutputRegressor
    lever = CAUSAL_LEVERS[lever] if isinstance(lever, str) else lever
    if "churned" not in frame.columns:
        raise ValueError("lever_effect needs labelled rows (a 'churned' column): pass table.labelled()")
    frame = frame.filter(pl.col("churned").is_not_null())
    events = _events_of(frame, events, id_column)
    exp = exposures(frame, events, lever, half_life_days=half_life_days, id_column=id_column)
    k = len(lever.exposure())
    names = controls_for(registry, lever)
    cats = _categories(frame, names)
    if traits:
        rev = lever_traits(frame, events, half_life_days=half_life_days, id_column=id_column).drop(id_column, "snapshot_date")
        frame = pl.concat([frame, rev], how="horizontal")
        names += rev.columns
    W = _matrix(frame, names, cats)
    y = frame["churned"].cast(pl.Float64).to_numpy()
    T = exp.select([f"observed_{i}" for i in range(k)]).to_numpy()
    groups = frame[id_column].to_numpy()
    if np.any(T.var(axis=0) == 0) or y.min() == y.max():
        raise ValueError(f"lever {lever.pillar!r}: no variation in its exposure or in churn in these rows: nothing to learn from")
    params = {**NUISANCE_PARAMS, "random_state": seed}
    model_t = lgb.LGBMRegressor(**params) if k == 1 else MultiOutputRegressor(lgb.LGBMRegressor(**params))
    # the filter list is one for every thread and catch_warnings is not thread-safe: in a second thread the caller
    # quiets the note once around both threads (`Study.compute`), since restoring it here could undo the other's filters
    in_main = threading.current_thread() is threading.main_thread()
    with warnings.catch_warnings() if in_main else contextlib.nullcontext():
        if in_main:
            quiet_nuisance_notes()
        cv = splits if splits is not None else crossfit_folds(frame, folds=folds, seed=seed, id_column=id_column)
        lin = LinearDML(model_y=lgb.LGBMClassifier(**params), model_t=model_t, discrete_outcome=True,
                        cv=cv, random_state=seed, allow_missing=True)
        lin.fit(y, T[:, 0] if k == 1 else T, W=W, groups=groups, cache_values=True)
        y_res, t_res = lin.residuals_[:2]
    y_res, t_res = np.ravel(y_res), np.asarray(t_res).reshape(len(y), -1)
    base = y - y_res                                   # cross-fitted baseline churn risk
    theta, cov = _dml_final(y_res, np.hstack([t_res, t_res * base[:, None]]), groups)
    ov = overlap(T.sum(axis=1), W, groups, seed=seed, folds=folds)
    ov["exposure_r2"] = float(np.mean(1 - t_res.var(axis=0) / T.var(axis=0)))
    out = LeverEffect(lever.pillar, lever.description, theta, cov, exp.with_columns(baseline=pl.Series(base)), ov, names,
                      cats, list(lin.models_y[0]))
    out.per_row = out.per_row.with_columns(effect=pl.Series(out.design(exp, base) @ theta))
    return out


def lever_effects(frame: pl.DataFrame, events: pl.DataFrame, registry: FeatureRegistry, levers=None, *,
                  progress: bool = False, **kwargs) -> dict[str, LeverEffect]:
    """`lever_effect` for each lever whose events the data has (default: all of `CAUSAL_LEVERS`)."""
    names = list(levers or CAUSAL_LEVERS)
    have = set(events["event_type"].unique().cast(pl.String).to_list())
    names = [n for n in names if set(CAUSAL_LEVERS[n].events) <= have]
    events = _events_of(frame, events, kwargs.get("id_column", "customer_id"))   # once for every lever
    if "splits" not in kwargs and names:   # the folds depend only on the rows: drawn once for every lever
        kwargs["splits"] = crossfit_folds(frame, **{k: kwargs[k] for k in ("folds", "seed", "id_column") if k in kwargs})
    if progress:
        from tqdm.auto import tqdm
        names = tqdm(names, desc="causal effects", unit="lever")
    return {n: lever_effect(frame, events, registry, n, **kwargs) for n in names}


def simulator_truth(frame: pl.DataFrame, *, n_customers: int, n_months: int, seed: int, levers=None,
                    effects: pl.DataFrame | None = None) -> pl.DataFrame:
    """True per-row effects of each lever's simulator policy on label-window churn (common random numbers).

    Rows of `frame` (customer_id, snapshot_date) get ``true_<lever>``: churn probability in the
    snapshot's month under the policy minus as observed; null where the customer had already
    left in the policy's world. `effects`: the simulator's `true_effects` with an ``effect_<lever>`` column
    per lever, simulated with these levers' policies, when already computed (else simulated here).
    """
    from trustml.simulator import Policy, true_effects
    names = list(levers or CAUSAL_LEVERS)
    eff = effects if effects is not None else true_effects(n_customers, n_months, seed,
                                                           {n: Policy(**CAUSAL_LEVERS[n].policy) for n in names})
    keys = frame.select("customer_id", pl.col("snapshot_date").alias("month_start"))
    out = keys.join(eff, on=["customer_id", "month_start"], how="left", maintain_order="left")
    return out.select("customer_id", pl.col("month_start").alias("snapshot_date"),
                      *[pl.col(f"effect_{n}").alias(f"true_{n}") for n in names])


def causal_vs_truth(effects: dict[str, LeverEffect], truth: pl.DataFrame) -> pl.DataFrame:
    """Per lever: causal average effect and interval beside the true average on the same rows, and per-row Spearman.

    `truth`: `simulator_truth` on the same rows. Rows whose customer had left earlier in the
    policy's world (no true effect) are left out of both sides. Diagnosis columns: ``oracle_fit_points``
    and ``oracle_fit_r2``, the mean and R^2 of the best least-squares fit of the true effects on the
    estimator's own per-row design (exposure changes, and them times baseline risk): if the oracle
    fit misses too, the exposures do not carry what drives the truth (a hidden modifier); if it
    matches, the miss is in the estimation (confounding, noise).
    """
    from scipy.stats import spearmanr
    rows = []
    for name, e in effects.items():
        true = truth[f"true_{name}"]
        keep = true.is_not_null().to_numpy()
        ate, (lo, hi) = e.ate_on(keep)
        est, tr = e.per_row["effect"].to_numpy()[keep], true.to_numpy()[keep].astype(float)
        true_ate = float(tr.mean())
        rho = spearmanr(est, tr).statistic if est.std() > 0 and tr.std() > 0 else float("nan")
        # diagnosis: how well the best possible coefficients on the same exposures could fit the truth
        D = e.design(e.per_row, e.per_row["baseline"].to_numpy())[keep]
        fitted = D @ np.linalg.lstsq(D, tr, rcond=None)[0]
        fit_r2 = 1 - np.sum((tr - fitted) ** 2) / max(np.sum((tr - tr.mean()) ** 2), 1e-300)
        rows.append({**e.summary(), "oracle_fit_points": 100 * float(fitted.mean()), "oracle_fit_r2": float(fit_r2),
                     "causal_points": 100 * ate, "ci_low_points": 100 * lo, "ci_high_points": 100 * hi,
                     "true_points": 100 * true_ate, "rel_error": abs(ate - true_ate) / abs(true_ate) if true_ate else float("nan"),
                     "truth_in_ci": bool(lo <= true_ate <= hi), "spearman": float(rho), "rows_compared": float(keep.mean())})
        rows[-1]["diagnosis"] = _diagnose(rows[-1])
    return pl.DataFrame(rows)


def _diagnose(r: dict) -> str:
    """Why a lever misses a target, from the measured columns of `causal_vs_truth` (empty when all targets are met)."""
    misses = [m for m, bad in (("average off by more than 25%", r["rel_error"] > 0.25), ("truth outside the interval", not r["truth_in_ci"]),
                               ("per-customer Spearman below 0.5", not r["spearman"] >= 0.5)) if bad]
    if not misses:
        return ""
    why = []
    oracle_err = abs(r["oracle_fit_points"] - r["true_points"]) / max(abs(r["true_points"]), 1e-12)
    if r["oracle_fit_r2"] < 0.5 or oracle_err > 0.25:
        why.append(f"the exposure cannot carry the truth (best fit on it: {r['oracle_fit_points']:.2f} points, R2 {r['oracle_fit_r2']:.2f}):"
                   " a hidden modifier drives the effect")
    if r["truth_in_ci"] and r["rel_error"] > 0.25:
        why.append(f"noise: the truth is inside the interval (+/-{(r['ci_high_points'] - r['ci_low_points']) / 2:.2f} points); more customers narrow it")
    elif not r["truth_in_ci"] and oracle_err <= 0.25:
        why.append("estimation bias beyond noise while the exposure could express the truth: a confounder the controls miss")
    return "; ".join(misses) + ": " + ("; ".join(why) or "see oracle_fit and the interval")


# --- causal effects for any rows: what_if / campaign / segments -------------------------------

def causal_for_rows(effects: dict[str, LeverEffect], frame: pl.DataFrame, events: pl.DataFrame, *,
                    half_life_days: float = 60.0, id_column: str = "customer_id") -> pl.DataFrame:
    """Each lever's causal effect for each row of `frame` (one snapshot per row), with a 95% interval.

    One row per input row x lever: ``causal_points`` (change in label-window churn probability,
    points; negative = fewer churners), ``ci_low_points``/``ci_high_points`` (from the estimate's
    uncertainty in theta; the exposure change is observed). Ids are pseudonymised.
    """
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    parts = []
    for name, e in effects.items():
        d = _design_for(e, name, frame, events, half_life_days=half_life_days, id_column=id_column)
        eff = d @ e.theta
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, e.cov, d), 0.0))
        parts.append(pl.DataFrame({"customer": ids, "snapshot_date": frame["snapshot_date"], "lever": name,
                                   "label": PILLARS[name].label, "causal_points": 100 * eff,
                                   "ci_low_points": 100 * (eff - 1.959964 * se), "ci_high_points": 100 * (eff + 1.959964 * se)}))
    return pl.concat(parts) if parts else pl.DataFrame()


def _design_for(e: LeverEffect, name: str, frame: pl.DataFrame, events: pl.DataFrame, *, half_life_days: float = 60.0,
                id_column: str = "customer_id") -> np.ndarray:
    """The per-row design (exposure changes, and them x baseline risk) of new rows: effect = design @ theta."""
    exp = exposures(frame, events, CAUSAL_LEVERS[name], half_life_days=half_life_days, id_column=id_column)
    return e.design(exp, e.baseline(frame, events, id_column))


# the model's view of each simulator policy, for many rows at once (see whatif.SIMULATOR_LEVERS for one row)
MODEL_SETTINGS: dict[str, Callable[[pl.DataFrame], dict]] = {
    "promises": lambda f: {"promise_broken": [0.0] * f.height},
    "empathy": lambda f: {"empathy_score": (f["empathy_score__mean_180d"].fill_null(3.0) + 1).to_list()},
    "respect_for_time": lambda f: {"marketing_contact": f["marketing_contact__count_30d"].clip(None, 1).to_list()},
    "transparency": lambda f: {"price_change_unannounced": [0.0] * f.height},
    "service_quality": lambda f: {"resolution_hours": (f["resolution_hours__mean_90d"] / 3).to_list()},
}


@dataclass
class SegmentWhatIf:
    """A policy applied to every customer in a segment: the model's answer and the causal one, side by side."""

    policy: str
    segment: str
    rows: pl.DataFrame       # customer, risk_before, model_points, causal_points (per customer)
    summary: pl.DataFrame    # one row per answer: customers, mean points, churners saved (with interval), money

    def plot(self, ax=None):
        """Histogram of the per-customer change in churn risk: the model's what-if vs the causal estimate."""
        import matplotlib.pyplot as plt
        ax = ax or plt.subplots(figsize=(6.5, 3.2))[1]
        for col, label, color in (("model_points", "model what-if (association)", "#aaaaaa"),
                                  ("causal_points", "causal estimate (DML)", "#4c72b0")):
            if col in self.rows.columns and self.rows[col].null_count() < self.rows.height:
                ax.hist(self.rows[col].drop_nulls().to_numpy(), bins=40, alpha=0.6, label=label, color=color)
        ax.set(title=f"{self.policy} for {self.segment}", xlabel="change in churn risk, points (negative = fewer churners)",
               ylabel="customers")
        ax.legend(fontsize=8)
        return ax


def segment_what_if(trained, frame: pl.DataFrame, policy: str, *, where: pl.Expr | None = None, value=0.0,
                    effects: dict[str, LeverEffect] | None = None, events: pl.DataFrame | None = None,
                    id_column: str = "customer_id") -> SegmentWhatIf:
    """What if `policy` (a key of `CAUSAL_LEVERS`) applied to every customer matching `where`?

    frame: one row per customer (e.g. the latest snapshot). value: money per customer kept
    (one number, or a column name of `frame`). The model's answer re-scores the segment with the
    policy's feature change (one vectorised predict call); the causal answer (when `effects` has the
    lever and `events` are given) is the DML effect per customer, and churners saved get a 95%
    interval. Both are in the label window (e.g. the next month).
    """
    from trustml.whatif import _set_lever, levers
    if policy not in CAUSAL_LEVERS:
        raise KeyError(f"unknown policy {policy!r}; choose one of {sorted(CAUSAL_LEVERS)}")
    seg = frame if where is None else frame.filter(where)
    label = "all customers" if where is None else str(where)
    if seg.height == 0:
        raise ValueError(f"segment {label}: no customer matches")
    v = seg[value].cast(pl.Float64).to_numpy() if isinstance(value, str) else np.broadcast_to(np.asarray(value, float), (seg.height,))
    by_name = {lv.name: lv for lv in levers(trained.registry)}
    after = seg
    for name, vals in MODEL_SETTINGS[policy](seg).items():
        if name in by_name:
            after = _set_lever(after, by_name[name], vals, trained.registry)
    risk = trained.predict_risk(pl.concat([seg, after], how="vertical_relaxed"))
    before, model = risk[:seg.height], risk[seg.height:] - risk[:seg.height]
    ids = pseudonymise(seg[id_column].to_list()) if id_column in seg.columns else [str(i) for i in range(seg.height)]
    rows = pl.DataFrame({"customer": ids, "risk_before": before, "model_points": 100 * model, "customer_value": v})
    summ = [{"answer": "model what-if (association)", "customers": seg.height, "mean_points": float(100 * model.mean()),
             "churners_saved": float(-model.sum()), "saved_low": None, "saved_high": None, "money": float(-(model * v).sum())}]
    if effects and policy in effects and events is not None:
        e = effects[policy]
        # only the events the levers read, of the segment's customers (a segment of a large base: a fraction of the log)
        events = events.filter(_of_types(events, _lever_event_types()))
        if id_column in events.columns and seg.height < frame.height:
            events = events.filter(pl.col(id_column).is_in(seg[id_column].unique().implode()))
        d = _design_for(e, policy, seg, events, id_column=id_column)
        eff = d @ e.theta
        rows = rows.with_columns(causal_points=pl.Series(100 * eff))
        tot = d.sum(axis=0)
        se = float(np.sqrt(max(tot @ e.cov @ tot, 0.0)))
        saved = float(-eff.sum())
        summ.append({"answer": "causal estimate (DML)", "customers": seg.height, "mean_points": float(100 * eff.mean()),
                     "churners_saved": saved, "saved_low": saved - 1.959964 * se, "saved_high": saved + 1.959964 * se,
                     "money": float(-(eff * v).sum())})
    return SegmentWhatIf(CAUSAL_LEVERS[policy].description, label, rows,
                         pl.DataFrame(summ, schema_overrides={"saved_low": pl.Float64, "saved_high": pl.Float64}))


def causal_campaign(effects: dict[str, LeverEffect], frame: pl.DataFrame, events: pl.DataFrame, risk, value, *,
                    costs: dict | None = None, top_n: int = 100, id_column: str = "customer_id") -> pl.DataFrame:
    """The top-N at-risk customers (by `risk`), each with the policy of highest expected value by its *causal* effect.

    expected_value = -causal effect (probability) x customer value - cost of the policy (`costs`:
    {lever: money}, default 10 each); 'no action' (0) wins when nothing pays. The interval of the
    chosen effect is shown. Ids are pseudonymised.
    """
    costs = costs or {}
    risk = np.asarray(risk, dtype=float)
    value = np.broadcast_to(np.asarray(value, dtype=float), (frame.height,))
    top = np.argsort(-risk, kind="stable")[:top_n]
    sub = frame[top]
    c = causal_for_rows(effects, sub, events, id_column=id_column)
    names = list(effects)
    pts = c["causal_points"].to_numpy().reshape(len(names), len(top)).T
    lo = c["ci_low_points"].to_numpy().reshape(len(names), len(top)).T
    hi = c["ci_high_points"].to_numpy().reshape(len(names), len(top)).T
    cost = np.array([costs.get(n, 10.0) for n in names])
    ev = -pts / 100 * value[top][:, None] - cost[None, :]
    best = np.argmax(ev, axis=1)
    act = ev[np.arange(len(top)), best] > 0
    pick = lambda a: np.where(act, a[np.arange(len(top)), best], 0.0)  # noqa: E731
    out = pl.DataFrame({"customer": c["customer"][:len(top)], "risk": risk[top], "customer_value": value[top],
                        "action": [CAUSAL_LEVERS[names[b]].description if a else "no action" for b, a in zip(best, act, strict=True)],
                        "causal_points": pick(pts), "ci_low_points": pick(lo), "ci_high_points": pick(hi),
                        "cost": np.where(act, cost[best], 0.0), "expected_value": np.where(act, ev[np.arange(len(top)), best], 0.0)})
    return out.sort("expected_value", descending=True, maintain_order=True).with_columns(rank=pl.int_range(1, pl.len() + 1))
