"""Randomised retention campaigns: design, assignment, CRM export, analysis, uplift and Qini.

A retention offer is itself a contact, and more contact is not more trust: some customers are
persuadable, some are "sleeping dogs" whom a call pushes out. So measure, with a randomised
campaign: `sample_size` for the effect you need to see, `assign` (seeded, reproducible from the
ids alone), `crm_export`, then `analyse` (average effect with a 95% interval), `fit_uplift`
(a risk-scaled DR-learner by default; T-, X- and DR-learners too), `qini`, `calibrate` (uplift scores
against held-out doubly robust pseudo-outcomes, so the expected saving is honest), `offer_cost` (an
offer's terms x the abuse seen among the offered) and `plan` (persuadables whose calibrated saving
covers the cost with confidence; when nothing pays, it says so instead of targeting a fixed number).
`simulated_campaign` runs it all on the simulator and checks it against the true individual effects, in a world of
its own (at most `OWN_WORLD_CUSTOMERS` customers when asked, whatever the size of the study around it).

Examples
--------
>>> n = sample_size(0.06, -0.02)
>>> 1500 < n["per_arm"] < 2500
True
>>> assign(["C1", "C2", "C3"], 0.5, seed=1).tolist() == assign(["C1", "C2", "C3"], 0.5, seed=1).tolist()
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["sample_size", "assign", "crm_export", "campaign_rows", "analyse", "Uplift", "fit_uplift", "qini", "target",
           "Calibration", "calibrate", "OFFER_TERMS", "offer_cost", "plan", "simulated_rows",
           "simulated_campaign", "plot_qini", "with_traits",
           "UPLIFT_PARAMS", "OWN_WORLD_CUSTOMERS"]

UPLIFT_PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=8, min_child_samples=50, colsample_bytree=0.7,
                     subsample=0.8, subsample_freq=1, reg_lambda=1.0, n_jobs=1, verbose=-1)

# The simulated campaign is an experiment in a world of its own, sized for the experiment, not for the study it sits in:
# 12,000 customers leave 6,400 to 7,200 active at a campaign six months before the end of a 24- to 36-month world, about
# what `sample_size(0.10, -0.02)` asks (6,426) to see two points off a 10% churn rate; more only slows the notebook down.
OWN_WORLD_CUSTOMERS = 12_000


def sample_size(base_rate: float, effect: float, *, power: float = 0.8, alpha: float = 0.05, treated_share: float = 0.5) -> dict:
    """Customers needed to detect a change of `effect` in a churn rate of `base_rate` (two-sided test of two proportions).

    Returns {'per_arm' (the larger arm), 'treated', 'control', 'total'}; `effect` is in probability
    (-0.02 = two points fewer churners).
    """
    from scipy.stats import norm
    p0, p1 = base_rate, base_rate + effect
    if not (0 < p0 < 1 and 0 < p1 < 1) or effect == 0:
        raise ValueError(f"need 0 < base_rate, base_rate + effect < 1 and effect != 0; got {base_rate}, {effect}")
    k = treated_share / (1 - treated_share)          # treated per control
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pbar = (k * p1 + p0) / (1 + k)
    n_c = (za * np.sqrt(pbar * (1 - pbar) * (1 + 1 / k)) + zb * np.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / k)) ** 2 / effect ** 2
    n_c = int(np.ceil(n_c))
    n_t = int(np.ceil(k * n_c))
    return {"per_arm": max(n_t, n_c), "treated": n_t, "control": n_c, "total": n_t + n_c}


def assign(ids, share: float, seed: int = 0) -> np.ndarray:
    """Treatment (True) or control per id: a seeded hash of the id, so the same ids and seed always split the same way.

    Independent of order and of who else is in the list (a customer added later does not move anyone).
    """
    ids = list(ids)
    u = np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") for i in ids], dtype=np.float64)
    return (u / 2.0 ** 64) < share


def crm_export(ids, share: float, seed: int, offer: str, *, real_ids: bool = False) -> pl.DataFrame:
    """The list a CRM needs: one row per customer with its arm and offer. Ids pseudonymised unless `real_ids`."""
    from trustml.privacy import pseudonymise
    ids = list(ids)
    arm = np.where(assign(ids, share, seed), "treatment", "control")
    shown = ids if real_ids else pseudonymise(ids)
    return pl.DataFrame({"customer": shown, "arm": arm, "offer": np.where(arm == "treatment", offer, "none")})


def campaign_rows(table, customers: pl.DataFrame, events: pl.DataFrame, *, start, share: float, seed: int,
                  horizon_months: int = 3, id_column: str = "customer_id") -> pl.DataFrame:
    """One row per customer active at the campaign's start: pre-campaign features, arm, and churn in the window after.

    table: a `FeatureTable` with a snapshot at `start` (features see only events before it); the
    outcome ``churned`` is a cancellation in ``[start + 1 month, start + 1 + horizon_months months)``
    (the offer is made during the start month); customers who cancel during the start month are kept
    (intention to treat) and count as churned. The window must end by the end of the data (the table's
    ``as_of``, else the last event): a cancellation after it is unseen, and would count as a stay.
    """
    import datetime as dt
    start = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
    rows = table.frame.filter(pl.col("snapshot_date") == start)
    if rows.height == 0:
        raise ValueError(f"the feature table has no snapshot at {start}: build it with Snapshots covering the campaign start")
    end = pl.select(pl.lit(start).dt.offset_by(f"{horizon_months + 1}mo")).item()
    seen = getattr(table, "as_of", None) or events["timestamp"].max()
    if seen is not None and dt.datetime.combine(end, dt.time()) > seen:
        fits = max(m for m in range(-1, horizon_months + 1)
                   if m < 0 or dt.datetime.combine(pl.select(pl.lit(start).dt.offset_by(f"{m + 1}mo")).item(), dt.time()) <= seen)
        raise ValueError(f"the outcome window ({horizon_months} months from {start:%Y-%m} + 1 month, to {end}) runs past the end "
                         f"of the data ({seen:%Y-%m-%d}): a cancellation after it is unseen and would count as a stay; "
                         + (f"use horizon_months={fits} or an earlier start" if fits > 0 else "use an earlier start"))
    cancel = (events.filter(pl.col("event_type").cast(pl.String) == "cancellation")
              .group_by(id_column).agg(pl.col("timestamp").min().alias("_cancel")))
    out = (rows.drop("churned").join(cancel, on=id_column, how="left")
           .with_columns(churned=(pl.col("_cancel").is_not_null() & (pl.col("_cancel") < pl.lit(end).cast(pl.Datetime("us")))).cast(pl.Int8))
           .drop("_cancel"))
    return out.with_columns(treated=pl.Series(assign(out[id_column].to_list(), share, seed)))


def analyse(rows: pl.DataFrame, *, outcome: str = "churned", arm: str = "treated") -> dict:
    """Average effect of the offer on churn (treated minus control rate) with a 95% (Neyman) interval."""
    from scipy.stats import norm
    y, t = rows[outcome].cast(pl.Float64).to_numpy(), rows[arm].cast(pl.Boolean).to_numpy()
    if t.all() or not t.any():
        raise ValueError("analyse needs customers in both arms")
    p1, p0 = y[t].mean(), y[~t].mean()
    se = np.sqrt(p1 * (1 - p1) / t.sum() + p0 * (1 - p0) / (~t).sum())
    ate = p1 - p0
    return {"treated": int(t.sum()), "control": int((~t).sum()), "churn_treated": float(p1), "churn_control": float(p0),
            "ate": float(ate), "ci": (float(ate - 1.959964 * se), float(ate + 1.959964 * se)),
            "p_value": float(2 * norm.sf(abs(ate) / se)) if se > 0 else float("nan")}


@dataclass
class Uplift:
    """A fitted model of the offer's effect on churn: uplift = churn if offered - churn if not (negative = the offer helps).

    T-learner: one LightGBM churn model per arm. X-learner: then each arm's imputed individual
    effects (observed outcome minus the other arm's model) are regressed on the features and
    averaged. DR-learner: the doubly robust pseudo-outcome (the T-learner's difference corrected by
    each row's residual over its known assignment probability), cross-fitted, regressed on the
    features. Scaled (default): a small-signal DR-learner; the offer shifts each customer's churn
    log-odds by a ridge-regularised linear function of their (log, standardised) features, so the
    change in churn probability is ``r (1 - r) (b0 + b.z)`` with ``r`` the customer's churn risk; the
    ridge penalty is chosen by the cross-fitted DR loss (a large penalty leaves the average effect
    scaled by risk). Forest: EconML's causal forest (`CausalForestDML`: LightGBM outcome model, the
    known assignment share as propensity, honest trees with at least 100 customers a leaf). `churn` gives each arm's churn probability, `pseudo_outcomes` the doubly robust
    per-customer effects a held-out check or `calibrate` needs.
    """

    treated_model: object
    control_model: object
    features: list[str]
    categories: dict | None = None
    effect_models: tuple = ()
    share: float = 0.5
    scaled: dict | None = None
    forest: object | None = None

    def _X(self, frame: pl.DataFrame) -> np.ndarray:
        from trustml.causal import _matrix
        return _matrix(frame, self.features, self.categories)

    def churn(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Churn probability if offered and if not, per row of `frame`."""
        X = self._X(frame)
        return self.treated_model.predict_proba(X)[:, 1], self.control_model.predict_proba(X)[:, 1]

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Predicted uplift per row (probability; negative = the offer keeps the customer)."""
        X = self._X(frame)
        if self.forest is not None:
            return np.ravel(self.forest.effect(np.nan_to_num(X)))
        if self.scaled is not None:
            s = self.scaled
            r = s["risk_model"].predict_proba(X)[:, 1]
            return _scaled_design(X, r, s["design"]) @ s["coef"]
        if self.effect_models:
            return np.mean([m.predict(X) for m in self.effect_models], axis=0)
        p1, p0 = self.churn(frame)
        return p1 - p0

    def pseudo_outcomes(self, frame: pl.DataFrame, *, outcome: str = "churned", arm: str = "treated") -> np.ndarray:
        """Doubly robust effect per row of a randomised campaign: unbiased for the row's effect, very noisy alone.

        Use on rows the model was not fitted on (held out), e.g. to `calibrate` the uplift or value a plan.
        """
        p1, p0 = self.churn(frame)
        y, t = frame[outcome].cast(pl.Float64).to_numpy(), frame[arm].cast(pl.Boolean).to_numpy()
        return _dr(y, t, p1, p0, self.share)


def _dr(y, t, p1, p0, e):
    return p1 - p0 + t * (y - p1) / e - (~t) * (y - p0) / (1 - e)


def _design_spec(X: np.ndarray, names: list[str], categories: dict) -> dict:
    """How `_scaled_design` turns features into z: log1p for non-negative columns, one-hot for categories, standardised."""
    cat_idx = [i for i, n in enumerate(names) if n in categories]
    levels = {i: len(categories[names[i]]) for i in cat_idx}
    log = np.array([i not in levels and bool(np.nanmin(X[:, i], initial=0.0) >= 0) for i in range(X.shape[1])])
    spec = {"log": log, "levels": levels, "center": None, "scale": None}
    Z = _z(X, spec)
    spec["center"], spec["scale"] = np.nanmean(Z, axis=0), np.nanstd(Z, axis=0)
    spec["scale"] = np.where(spec["scale"] > 1e-9, spec["scale"], 1.0)
    return spec


def _z(X: np.ndarray, spec: dict) -> np.ndarray:
    cols = []
    for i in range(X.shape[1]):
        x = X[:, i]
        if i in spec["levels"]:
            cols += [(x == k).astype(float) for k in range(1, spec["levels"][i])]
        else:
            cols.append(np.log1p(np.clip(x, 0, None)) if spec["log"][i] else x)
    Z = np.column_stack(cols)
    if spec["center"] is not None:
        Z = np.nan_to_num((Z - spec["center"]) / spec["scale"])
    return Z


def _scaled_design(X: np.ndarray, risk: np.ndarray, spec: dict) -> np.ndarray:
    s = risk * (1 - risk)
    return np.column_stack([s, s[:, None] * _z(X, spec)])


def _arm_models(X, y, t, params, folds, seed):
    """Cross-fitted churn probabilities if offered, if not, and ignoring the arm (out of fold for every row)."""
    import lightgbm as lgb
    mu1, mu0, m = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y))
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    for k in range(folds):
        tr, te = fold != k, fold == k
        mu1[te] = lgb.LGBMClassifier(**params).fit(X[tr & t], y[tr & t]).predict_proba(X[te])[:, 1]
        mu0[te] = lgb.LGBMClassifier(**params).fit(X[tr & ~t], y[tr & ~t]).predict_proba(X[te])[:, 1]
        m[te] = lgb.LGBMClassifier(**params).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return mu1, mu0, m


RIDGE_GRID = tuple(10.0 ** k for k in range(-1, 6))


def _ridge(B: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    pen = np.eye(B.shape[1]) * lam * len(target) * float(np.mean(B[:, 0] ** 2))
    pen[0, 0] = 0.0                                        # the risk-scaled average effect is not shrunk
    return np.linalg.solve(B.T @ B + pen, B.T @ target)


def fit_uplift(rows: pl.DataFrame, features: list[str], *, outcome: str = "churned", arm: str = "treated", seed: int = 0,
               learner: str = "scaled", folds: int = 3) -> Uplift:
    """Fit an uplift model (`learner` 'scaled', 't', 'x', 'dr' or 'forest', see `Uplift`) on a randomised campaign's rows.

    `rows`: pre-campaign `features`, the arm and the outcome. The DR and scaled learners use the
    campaign's own assignment share as the (known) propensity and cross-fit their churn models over
    `folds` folds; the scaled learner picks its ridge penalty by 5-fold cross-validated DR loss.
    """
    if learner not in ("scaled", "t", "x", "dr", "forest"):
        raise ValueError(f"learner must be 'scaled', 't', 'x', 'dr' or 'forest', got {learner!r}")
    import lightgbm as lgb

    from trustml.causal import _categories, _matrix
    cats = _categories(rows, features)
    X = _matrix(rows, features, cats)
    y, t = rows[outcome].cast(pl.Int8).to_numpy(), rows[arm].cast(pl.Boolean).to_numpy()
    if t.all() or not t.any():
        raise ValueError("fit_uplift needs customers in both arms")
    params = {**UPLIFT_PARAMS, "random_state": seed}
    m1 = lgb.LGBMClassifier(**params).fit(X[t], y[t])
    m0 = lgb.LGBMClassifier(**params).fit(X[~t], y[~t])
    e = float(t.mean())                                     # randomised: the propensity is the assignment share
    effect_models, scaled, forest = (), None, None
    if learner == "x":
        d1 = y[t] - m0.predict_proba(X[t])[:, 1]          # offered: what happened minus what would have without
        d0 = m1.predict_proba(X[~t])[:, 1] - y[~t]         # not offered: what would have with the offer minus what happened
        effect_models = (lgb.LGBMRegressor(**params).fit(X[t], d1), lgb.LGBMRegressor(**params).fit(X[~t], d0))
    elif learner == "dr":
        mu1, mu0, _ = _arm_models(X, y, t, params, folds, seed)
        pseudo = _dr(y, t, mu1, mu0, e)
        effect_models = (lgb.LGBMRegressor(**{**params, "min_child_samples": 200}).fit(X, pseudo),)
    elif learner == "scaled":
        nuisance = {**params, "n_estimators": 150}
        mu1, mu0, m = _arm_models(X, y, t, nuisance, folds, seed)
        pseudo = _dr(y, t, mu1, mu0, e)
        spec = _design_spec(X, list(features), cats)
        B = _scaled_design(X, m, spec)
        cv = np.random.default_rng(seed + 1).integers(0, 5, len(y))
        loss = [sum(float(((pseudo[cv == k] - B[cv == k] @ _ridge(B[cv != k], pseudo[cv != k], lam)) ** 2).sum())
                    for k in range(5)) for lam in RIDGE_GRID]
        lam = RIDGE_GRID[int(np.argmin(loss))]
        scaled = {"risk_model": lgb.LGBMClassifier(**nuisance).fit(X, y), "design": spec, "coef": _ridge(B, pseudo, lam),
                  "penalty": lam}
    elif learner == "forest":
        from econml.dml import CausalForestDML
        from sklearn.dummy import DummyClassifier
        forest = CausalForestDML(model_y=lgb.LGBMClassifier(**{**params, "n_estimators": 150}),
                                 model_t=DummyClassifier(strategy="prior"),     # randomised: the share is the propensity
                                 discrete_outcome=True, discrete_treatment=True, n_estimators=200, min_samples_leaf=100,
                                 max_depth=6, cv=folds, random_state=seed, n_jobs=1)
        forest.fit(y, t.astype(int), X=np.nan_to_num(X))
    return Uplift(m1, m0, list(features), cats, effect_models, e, scaled, forest)


def qini(score: np.ndarray, churned: np.ndarray, treated: np.ndarray, *, points: int = 101) -> dict:
    """Qini curve: customers kept by treating the top fraction ranked by `score` (higher = treat first).

    Kept(phi) = churners among the control top-phi, scaled to the treated count, minus churners among
    the treated top-phi: R_C * N_T / N_C - R_T. The coefficient is the mean gap between the curve and
    random targeting (the straight line to the full campaign's result), per customer treated in the
    whole campaign; `uplift_at` gives the kept-per-treated rate in the top 10/20/30%.
    """
    score, y, t = np.asarray(score, float), np.asarray(churned, float), np.asarray(treated, bool)
    order = np.argsort(-score, kind="stable")
    y, t = y[order], t[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    r_t, r_c = np.cumsum(y * t), np.cumsum(y * ~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.where(n_c > 0, r_c * n_t / np.maximum(n_c, 1), 0.0) - r_t
    frac = np.arange(1, len(y) + 1) / len(y)
    grid = np.linspace(0, 1, points)
    idx = np.clip((grid * len(y)).astype(int) - 1, 0, len(y) - 1)
    curve = np.where(grid == 0, 0.0, kept[idx])
    random = grid * kept[-1]
    coef = float(np.mean(curve - random) / max(n_t[-1], 1))
    at = {}
    for k in (0.1, 0.2, 0.3):
        i = max(int(k * len(y)) - 1, 0)
        at[f"top_{int(k * 100)}pct"] = float(kept[i] / max(n_t[i], 1))
    return {"fraction": grid, "kept": curve, "random": random, "coefficient": coef, "uplift_at": at,
            "total_kept": float(kept[-1]), "frac_all": frac}


@dataclass
class Calibration:
    """Predicted uplift mapped to the average effect it really has: effect = intercept + slope x score (+ value_slope x z).

    Fitted (`calibrate`) on held-out doubly robust pseudo-outcomes, so an overconfident uplift
    model is shrunk towards the average effect (slope < 1) and a model that ranks no better than
    chance leaves only the average effect (slope 0: never clipped below, so a held-out reversal
    cannot turn the ranking upside down), capped at 1 (calibration only shrinks: a noisy held-out
    slope above 1 would stretch the model's own spread). Calibrated with values, ``z`` is the
    customer's standardised log value: a plan picks valuable customers, so the effect is calibrated
    for them too. `cov`: covariance of (intercept, slope, value_slope).
    """

    intercept: float
    slope: float
    cov: np.ndarray
    value_slope: float = 0.0
    value_center: float | None = None
    value_scale: float = 1.0

    def _design(self, score, value) -> np.ndarray:
        score = np.asarray(score, float)
        if self.value_center is None:
            z = np.zeros(len(score))
        elif value is None:
            raise ValueError("this calibration depends on the customer's value: pass `value`")
        else:
            z = (np.log(np.asarray(value, float)) - self.value_center) / self.value_scale
        return np.column_stack([np.ones(len(score)), score, z])

    def predict(self, score, value=None) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated effect, its standard error) per score (and value, when calibrated with values)."""
        B = self._design(score, value)
        return B @ np.array([self.intercept, self.slope, self.value_slope]), np.sqrt(np.einsum("ij,jk,ik->i", B, self.cov, B))


def calibrate(score, pseudo, *, value=None) -> Calibration:
    """Calibrate uplift scores against doubly robust pseudo-outcomes of the same (held-out) customers (OLS, robust covariance).

    With `value` (each customer's worth), the log value is a second regressor: an offer that helps
    the valuable customers least is not credited with the average effect for them.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> effect = rng.normal(-0.02, 0.02, 20_000)
    >>> pseudo = effect + rng.normal(0, 0.5, 20_000)          # unbiased but noisy, like DR pseudo-outcomes
    >>> c = calibrate(3 * effect, pseudo)                      # an overconfident score: 3x the true spread
    >>> 0.15 < c.slope < 0.55                                  # shrunk by about a third
    True
    """
    s, y = np.asarray(score, float), np.asarray(pseudo, float)
    center, scale = None, 1.0
    z = np.zeros(len(s))
    if value is not None:
        lv = np.log(np.asarray(value, float))
        center, scale = float(lv.mean()), float(lv.std()) or 1.0
        z = (lv - center) / scale
    cols = [0, 1, 2] if value is not None else [0, 1]
    B = np.column_stack([np.ones(len(s)), s, z])
    offset = np.zeros(len(s))
    coef = np.zeros(3)
    coef[cols] = np.linalg.lstsq(B[:, cols], y, rcond=None)[0]
    if coef[1] <= 0 or coef[1] > 1:                          # no usable ranking (slope 0), or never stretched (slope 1)
        fixed = 0.0 if coef[1] <= 0 else 1.0
        offset = fixed * s
        cols = [c for c in cols if c != 1]
        coef = np.zeros(3)
        coef[cols] = np.linalg.lstsq(B[:, cols], y - offset, rcond=None)[0]
        coef[1] = fixed
    X = B[:, cols]
    r = y - offset - X @ coef[cols]
    bread = np.linalg.inv(X.T @ X)
    cov = np.zeros((3, 3))
    cov[np.ix_(cols, cols)] = bread @ (X.T * r ** 2) @ X @ bread * len(y) / max(len(y) - len(cols), 1)
    return Calibration(float(coef[0]), float(coef[1]), cov, float(coef[2]), center, scale)


OFFER_TERMS = {"service_call": 15.0, "promise_followup": 8.0, "goodwill_credit": 10.0, "discount": "20% of 3 months' price"}


def offer_cost(offer: str, monthly_price, *, realized=None, treated=None) -> np.ndarray:
    """Expected cost of making `offer` to each customer, as known before targeting: its terms x the abuse seen in the campaign.

    Terms (`OFFER_TERMS`): a call 15, a follow-up 8, a goodwill credit 10 (no proof asked), a discount
    20% of 3 months of `monthly_price`. With `realized` (what each offer really cost, known for the
    offered customers only) and `treated`, the terms are scaled by realized / terms among the offered:
    a goodwill credit that some customers claim again and again costs more than its face value, and
    that is priced in like any other cost.

    Examples
    --------
    >>> offer_cost("goodwill_credit", [20.0, 90.0, 45.0, 45.0], realized=[10.0, 40.0, 10.0, 0.0], treated=[True, True, True, False]).tolist()
    [20.0, 20.0, 20.0, 20.0]
    """
    price = np.asarray(monthly_price, float)
    if offer not in OFFER_TERMS:
        raise ValueError(f"offer must be one of {sorted(OFFER_TERMS)}, got {offer!r}")
    terms = 0.2 * 3 * price if offer == "discount" else np.full(len(price), float(OFFER_TERMS[offer]))
    if realized is None:
        return terms
    realized, treated = np.asarray(realized, float), np.asarray(treated, bool)
    if not (len(realized) == len(treated) == len(price)) or not treated.any():
        raise ValueError("offer_cost needs realized costs and arms for the same customers as monthly_price, some offered")
    return terms * realized[treated].mean() / terms[treated].mean()


def target(benefit, value, cost, *, se=None, confidence: float = 0.8) -> np.ndarray:
    """Whom to make the offer: expected value = churn avoided (benefit, probability) x customer value - cost > 0.

    With `se` (the benefit's standard error, e.g. from `Calibration.predict`), only where the
    one-sided `confidence` lower bound of the benefit still pays for the offer (0.8: four to one that it pays).
    """
    b = np.asarray(benefit, float)
    if se is not None:
        from scipy.stats import norm
        b = b - norm.ppf(confidence) * np.asarray(se, float)
    return b * np.asarray(value, float) - np.asarray(cost, float) > 0


def plan(benefit, value, cost, *, se=None, confidence: float = 0.8, pseudo=None) -> dict:
    """A targeting plan with its message: who (`target`), how many, and the expected money net of cost.

    'target' (mask), 'offers', 'expected_money' (calibrated benefit x value - cost over the targeted),
    'message'. When nobody is targeted the message says so plainly instead of offering a fixed number.
    With `pseudo` (held-out doubly robust effects of the same customers) also 'estimated_money' and its
    95% interval, read from the outcomes rather than from the model; if that estimate is not positive
    the plan is withdrawn (no offers) and the message says why.

    Examples
    --------
    >>> plan([0.01, 0.02], [100.0, 100.0], [5.0, 5.0])["message"]
    "no customer's expected saving covers the offer's cost (at 80% confidence): make no offer"
    """
    pick = target(benefit, value, cost, se=se, confidence=confidence)
    b, v, c = (np.asarray(a, float) for a in (benefit, value, cost))
    out = {"target": pick, "offers": int(pick.sum()), "expected_money": float((b * v - c)[pick].sum())}
    message = None
    if pseudo is not None and pick.any():
        g = (-np.asarray(pseudo, float) * v - c)[pick]
        se_sum = float(np.sqrt(len(g) * g.var(ddof=1))) if len(g) > 1 else 0.0
        out["estimated_money"] = float(g.sum())
        out["estimated_ci"] = (float(g.sum() - 1.959964 * se_sum), float(g.sum() + 1.959964 * se_sum))
        if out["estimated_money"] <= 0:                     # the outcomes of those customers do not show a saving
            message = (f"the {int(pick.sum())} customers the model would pick show no saving in held-out outcomes "
                       f"(estimated {out['estimated_money']:,.0f} [{out['estimated_ci'][0]:,.0f}, {out['estimated_ci'][1]:,.0f}]): "
                       "make no offer")
            out.update(target=np.zeros(len(pick), bool), offers=0, expected_money=0.0)
    if message is None and not out["offers"]:
        message = f"no customer's expected saving covers the offer's cost (at {confidence:.0%} confidence): make no offer"
    held = (f"; held-out outcomes of those customers: {out['estimated_money']:,.0f} [{out['estimated_ci'][0]:,.0f}, "
            f"{out['estimated_ci'][1]:,.0f}]") if "estimated_money" in out else ""
    out["message"] = message or (f"offer to {out['offers']} of {len(pick)} customers, whose expected saving covers the cost "
                                 f"(at {confidence:.0%} confidence): expected {out['expected_money']:,.0f} net of cost{held}")
    return out


def with_traits(rows: pl.DataFrame, events: pl.DataFrame, *, id_column: str = "customer_id") -> tuple[pl.DataFrame, list[str]]:
    """`rows` with each causal lever's revealed per-customer traits added (see `causal.revealed_traits`), and their names.

    E.g. the share of contacts engaged with in months of 2+ contacts, and the months with any contact: who
    welcomes contact and who is pushed away by it, the heterogeneity a contacting offer meets.
    """
    from trustml.causal import lever_traits
    tr = lever_traits(rows, events, id_column=id_column).drop(id_column, "snapshot_date")
    rows = pl.concat([rows, tr], how="horizontal")
    names = tr.columns
    return rows, names


def simulated_rows(campaign, *, n_customers: int = 20_000, n_months: int = 24, seed: int = 0, horizon_months: int = 3,
                   value_months: float = 12.0, traits: bool = True, max_customers: int | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Run `campaign` (a `simulator.Campaign`) in the simulator: its customers' rows as a retention team sees them, plus the truth.

    Returns (rows, features): `campaign_rows` with ``value`` (`value_months` of the customer's price)
    and the simulator's truth joined (``effect``, the true individual effect, and ``cost``, what the
    offer really cost, abuse included), and the observed features an uplift model may use
    (with `traits`, each lever's revealed traits too, `with_traits`). Truth columns are for checking only.
    The campaign's month may count back from the world's end (``month=-6``); its outcome window
    (`horizon_months` after the campaign month) must end within the world. `max_customers`: simulate at
    most this many customers (e.g. `OWN_WORLD_CUSTOMERS`; the world of ``min(n_customers, max_customers)``).

    Examples
    --------
    >>> from trustml.simulator import Campaign
    >>> rows, features = simulated_rows(Campaign("service_call", month=-5), n_customers=10**6, n_months=12, max_customers=300, traits=False)
    >>> rows.height < 300 and rows["customer_id"].n_unique() == rows.height
    True
    """
    import datetime as dt

    from trustml.features import Snapshots, build_features
    from trustml.simulator import Policy, SimConfig, campaign_effects, simulate
    if max_customers is not None:
        n_customers = min(n_customers, max_customers)
    m = campaign.month_in(n_months)
    if m + 1 + horizon_months > n_months:
        raise ValueError(f"a campaign in month {m} of a {n_months}-month world leaves {n_months - m - 1} months after it; "
                         f"its outcome needs {horizon_months} (campaign month at most {n_months - 1 - horizon_months}, "
                         f"or {-1 - horizon_months} counted from the end)")
    world = simulate(n_customers, n_months, seed, policy=Policy(campaign=campaign))
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    s = SimConfig().start
    start = dt.date(s.year + (s.month - 1 + m) // 12, (s.month - 1 + m) % 12 + 1, 1)
    rows = campaign_rows(table, world.customers, world.events, start=start, share=campaign.share, seed=campaign.seed,
                         horizon_months=horizon_months)
    truth = campaign_effects(n_customers, n_months, seed, campaign, horizon_months=horizon_months)
    # customers who left during the campaign month are gone before the offer can act: true effect 0
    # a kept customer's value: `value_months` of the price the team sees (the feature ``monthly_price``)
    rows = rows.join(truth.select("customer_id", "effect", "cost"), on="customer_id", how="left").with_columns(
        pl.col("effect").fill_null(0.0), pl.col("cost").fill_null(float(truth["cost"].mean())),
        value=pl.col("monthly_price").fill_null(pl.col("monthly_price").mean()) * value_months)
    features = list(table.registry.names)
    if traits:
        rows, extra = with_traits(rows, world.events)
        features += extra
    return rows, features


def simulated_campaign(campaign, *, n_customers: int = 20_000, n_months: int = 24, seed: int = 0, horizon_months: int = 3,
                       value_months: float = 12.0, learner: str = "scaled", traits: bool = True, confidence: float = 0.8,
                       rows: tuple[pl.DataFrame, list[str]] | None = None, value_calibration: bool = True,
                       max_customers: int | None = None) -> dict:
    """Run `campaign` (a `simulator.Campaign`) in the simulator and read it as a retention team would, then check with truth.

    Every customer is scored by an uplift model (`learner`, see `fit_uplift`) fitted on the other
    half (2-fold cross-fitting), and the scores are calibrated (`calibrate`) on the other half's
    held-out DR pseudo-outcomes, so every number is held out. The plan (`plan`) targets customers
    whose calibrated saving covers the offer's expected cost (`offer_cost`: its terms x the abuse
    seen among the offered) at `confidence`. Returns 'analysis' (`analyse`), 'true_ate', 'qini_model'
    and 'qini_oracle' (the model's ranking vs the true effects'), 'spearman_truth' (model vs true
    effects per customer), 'plan', 'calibration' (slope per fold), 'money' (valued with the true
    effects and true costs: the plan, the raw uncalibrated scores, the riskiest customers in the
    same number and a fixed 20%, everyone, and the oracle), 'rows' (truth joined), 'harmful_share',
    'customers' (the simulated world's size, None for given `rows`) and 'month' (the campaign's, from the start).
    `rows`: a `simulated_rows` result to reuse (the simulation is the slow part). `value_calibration`:
    calibrate on the score and the customer's value (see `calibrate`), not the score alone. `max_customers`:
    simulate at most this many customers (`OWN_WORLD_CUSTOMERS` sizes the world for the experiment, not the study).
    """
    customers = None if rows is not None else n_customers if max_customers is None else min(n_customers, max_customers)
    rows, features = rows if rows is not None else simulated_rows(
        campaign, n_customers=n_customers, n_months=n_months, seed=seed, horizon_months=horizon_months,
        value_months=value_months, traits=traits, max_customers=max_customers)
    fold = np.random.default_rng(seed).random(rows.height) < 0.5
    tau, p0, pseudo = np.zeros(rows.height), np.zeros(rows.height), np.zeros(rows.height)
    models = []
    for k in (False, True):
        up = fit_uplift(rows.filter(pl.Series(fold != k)), features, seed=seed, learner=learner)
        test = rows.filter(pl.Series(fold == k))
        tau[fold == k], p0[fold == k] = up.predict(test), up.churn(test)[1]
        pseudo[fold == k] = up.pseudo_outcomes(test)
        models.append(up)
    value = rows["value"].to_numpy()
    effect, se, slopes = np.zeros(rows.height), np.zeros(rows.height), []
    for k in (False, True):                                 # calibrate each half on the other half's held-out scores
        cal = calibrate(tau[fold != k], pseudo[fold != k], value=value[fold != k] if value_calibration else None)
        effect[fold == k], se[fold == k] = cal.predict(tau[fold == k], value[fold == k])
        slopes.append(cal.slope)
    y, t = rows["churned"].to_numpy(), rows["treated"].to_numpy()
    eff = rows["effect"].to_numpy()
    cost = offer_cost(campaign.offer, rows["monthly_price"].to_numpy(), realized=rows["cost"].to_numpy(), treated=t)
    gain = -eff * value - rows["cost"].to_numpy()          # the truth: churn avoided x value - what the offer really cost
    chosen = plan(-effect, value, cost, se=se, confidence=confidence, pseudo=pseudo)
    pick = chosen["target"]
    by_risk = np.argsort(-p0, kind="stable")
    risky, risky20 = np.zeros(rows.height, bool), np.zeros(rows.height, bool)
    risky[by_risk[:int(pick.sum())]] = True
    risky20[by_risk[:rows.height // 5]] = True
    plans = {"persuadables (calibrated, net of cost)": pick, "uplift scores as they are (EV > 0)": target(-tau, value, cost),
             "riskiest (same number)": risky, "riskiest 20%": risky20,
             "everyone": np.ones(rows.height, bool), "oracle (true effects)": gain > 0}
    money = pl.DataFrame({"targeting": list(plans), "offers": [int(v.sum()) for v in plans.values()],
                          "money": [float(gain[v].sum()) for v in plans.values()],
                          "churners_kept": [float(-eff[v].sum()) for v in plans.values()]})
    from scipy.stats import spearmanr
    return {"analysis": analyse(rows), "true_ate": float(rows["effect"].mean()), "rows": rows, "uplift": models[0],
            "qini_model": qini(-tau, y, t), "qini_oracle": qini(-eff, y, t), "money": money, "plan": chosen,
            "calibration": {"slopes": slopes, "expected_cost": float(cost.mean()), "cost_terms": float(
                offer_cost(campaign.offer, rows["monthly_price"].to_numpy()).mean())},
            "spearman_truth": float(spearmanr(-tau, -eff).statistic),
            "harmful_share": float((rows["effect"] > 0).mean()), "held_out": rows.height,
            "customers": customers, "month": campaign.month_in(n_months)}


def plot_qini(result: dict, ax=None):
    """Qini curves of `simulated_campaign`: the uplift model, the oracle and random targeting."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(5.5, 3.6))[1]
    for key, label, color in (("qini_model", "uplift model", "#4c72b0"), ("qini_oracle", "oracle (true effects)", "#55a868")):
        q = result[key]
        ax.plot(q["fraction"], q["kept"], label=f"{label}: Qini {q['coefficient']:.4f}", color=color)
    q = result["qini_model"]
    ax.plot(q["fraction"], q["random"], "--", color="#aaaaaa", label="random")
    ax.set(xlabel="share of customers offered (best first)", ylabel="churners kept (held-out)", title="Qini curves")
    ax.legend(fontsize=8)
    return ax
