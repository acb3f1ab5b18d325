"""Randomised retention campaigns: design, assignment, CRM export, analysis, uplift and Qini.

A retention offer is itself a contact, and more contact is not more trust: some customers are
persuadable, some are "sleeping dogs" whom a call pushes out. So measure, with a randomised
campaign: `sample_size` for the effect you need to see, `assign` (seeded, reproducible from the
ids alone), `crm_export`, then `analyse` (average effect with a 95% interval), `fit_uplift`
(LightGBM T-learner: churn with and without the offer), `qini` and `target` (persuadables by
expected value net of cost).

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
           "simulated_campaign", "plot_qini", "with_traits",
           "UPLIFT_PARAMS"]

UPLIFT_PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=8, min_child_samples=50, colsample_bytree=0.7,
                     subsample=0.8, subsample_freq=1, reg_lambda=1.0, n_jobs=1, verbose=-1)


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
    (intention to treat) and count as churned.
    """
    import datetime as dt
    start = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
    rows = table.frame.filter(pl.col("snapshot_date") == start)
    if rows.height == 0:
        raise ValueError(f"the feature table has no snapshot at {start}: build it with Snapshots covering the campaign start")
    end = pl.select(pl.lit(start).dt.offset_by(f"{horizon_months + 1}mo")).item()
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
    """A meta-learner of the offer's effect on churn: uplift = churn if offered - churn if not (negative = the offer helps).

    T-learner: one LightGBM churn model per arm. X-learner (default): then each arm's imputed
    individual effects (observed outcome minus the other arm's model) are regressed on the
    features and averaged, which smooths the T-learner's noise when effects are small.
    DR-learner: the doubly robust pseudo-outcome (the T-learner's difference corrected by each
    row's residual over its known assignment probability), cross-fitted, regressed on the features.
    """

    treated_model: object
    control_model: object
    features: list[str]

    def _X(self, frame: pl.DataFrame) -> np.ndarray:
        from trustml.causal import _matrix
        return _matrix(frame, self.features, self.categories)

    categories: dict | None = None
    effect_models: tuple = ()

    def churn(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        X = self._X(frame)
        return self.treated_model.predict_proba(X)[:, 1], self.control_model.predict_proba(X)[:, 1]

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        if self.effect_models:
            X = self._X(frame)
            return np.mean([m.predict(X) for m in self.effect_models], axis=0)
        p1, p0 = self.churn(frame)
        return p1 - p0


def fit_uplift(rows: pl.DataFrame, features: list[str], *, outcome: str = "churned", arm: str = "treated", seed: int = 0,
               learner: str = "x", folds: int = 3) -> Uplift:
    """Fit a T-, X- or DR-learner (`learner` 't', 'x' or 'dr') on a randomised campaign's rows (pre-campaign `features`, arm, outcome).

    The DR-learner uses the campaign's own assignment share as the (known) propensity and
    cross-fits the arm models over `folds` folds.
    """
    if learner not in ("t", "x", "dr"):
        raise ValueError(f"learner must be 't', 'x' or 'dr', got {learner!r}")
    import lightgbm as lgb

    from trustml.causal import _categories, _matrix
    cats = _categories(rows, features)
    X = _matrix(rows, features, cats)
    y, t = rows[outcome].cast(pl.Int8).to_numpy(), rows[arm].cast(pl.Boolean).to_numpy()
    params = {**UPLIFT_PARAMS, "random_state": seed}
    m1 = lgb.LGBMClassifier(**params).fit(X[t], y[t])
    m0 = lgb.LGBMClassifier(**params).fit(X[~t], y[~t])
    effect_models = ()
    if learner == "x":
        d1 = y[t] - m0.predict_proba(X[t])[:, 1]          # offered: what happened minus what would have without
        d0 = m1.predict_proba(X[~t])[:, 1] - y[~t]         # not offered: what would have with the offer minus what happened
        effect_models = (lgb.LGBMRegressor(**params).fit(X[t], d1), lgb.LGBMRegressor(**params).fit(X[~t], d0))
    elif learner == "dr":
        e = t.mean()                                        # randomised: the propensity is the assignment share
        mu1, mu0 = np.zeros(len(y)), np.zeros(len(y))
        fold = np.random.default_rng(seed).integers(0, folds, len(y))
        for k in range(folds):
            tr, te = fold != k, fold == k
            mu1[te] = lgb.LGBMClassifier(**params).fit(X[tr & t], y[tr & t]).predict_proba(X[te])[:, 1]
            mu0[te] = lgb.LGBMClassifier(**params).fit(X[tr & ~t], y[tr & ~t]).predict_proba(X[te])[:, 1]
        pseudo = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)
        effect_models = (lgb.LGBMRegressor(**{**params, "min_child_samples": 200}).fit(X, pseudo),)
    return Uplift(m1, m0, list(features), cats, effect_models)


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


def target(benefit: np.ndarray, value: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Whom to make the offer: expected value = churn avoided (benefit, probability) x customer value - cost > 0."""
    ev = np.asarray(benefit, float) * np.asarray(value, float) - np.asarray(cost, float)
    return ev > 0


def with_traits(rows: pl.DataFrame, events: pl.DataFrame, *, id_column: str = "customer_id") -> tuple[pl.DataFrame, list[str]]:
    """`rows` with each causal lever's revealed per-customer traits added (see `causal.revealed_traits`), and their names.

    E.g. the share of 2nd, 3rd, 4th+ contacts of a month the customer engaged with: who welcomes
    contact and who is pushed away by it, the heterogeneity a contacting offer meets.
    """
    from trustml.causal import lever_traits
    tr = lever_traits(rows, events, id_column=id_column).drop(id_column, "snapshot_date")
    rows = pl.concat([rows, tr], how="horizontal")
    names = tr.columns
    return rows, names


def simulated_campaign(campaign, *, n_customers: int = 20_000, n_months: int = 24, seed: int = 0, horizon_months: int = 3,
                       value_months: float = 12.0, learner: str = "x", traits: bool = True) -> dict:
    """Run `campaign` (a `simulator.Campaign`) in the simulator and read it as a retention team would, then check with truth.

    Every customer is scored by an uplift model fitted on the other half (2-fold cross-fitting), so
    all are held out once. Returns 'analysis' (`analyse` on the campaign's customers), 'true_ate',
    'qini_model' and 'qini_oracle' (the uplift model's ranking vs ranking by the true effect),
    'spearman_truth' (uplift model vs true effects, per customer), 'money' (valued with the true
    effects: persuadables targeted by expected value net of cost, the same number of riskiest
    customers, everyone, and the oracle's choice), 'rows' (the campaign's customers with the truth
    joined) and 'harmful_share' (true effect > 0).
    A kept customer is worth `value_months` months of their price. The uplift model (`learner`, see
    `fit_uplift`) sees the pre-campaign features and, with `traits`, each lever's revealed traits (`with_traits`).
    """
    import datetime as dt

    from trustml.features import Snapshots, build_features
    from trustml.simulator import Policy, SimConfig, campaign_effects, simulate
    world = simulate(n_customers, n_months, seed, policy=Policy(campaign=campaign))
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    s = SimConfig().start
    start = dt.date(s.year + (s.month - 1 + campaign.month) // 12, (s.month - 1 + campaign.month) % 12 + 1, 1)
    rows = campaign_rows(table, world.customers, world.events, start=start, share=campaign.share, seed=campaign.seed,
                         horizon_months=horizon_months)
    truth = campaign_effects(n_customers, n_months, seed, campaign, horizon_months=horizon_months)
    # customers who left during the campaign month are gone before the offer can act: true effect 0
    rows = rows.join(truth.select("customer_id", "effect", "cost", "monthly_price"), on="customer_id", how="left").with_columns(
        pl.col("effect").fill_null(0.0), pl.col("cost").fill_null(float(truth["cost"].mean())),
        value=pl.col("monthly_price").fill_null(pl.col("monthly_price").mean()) * value_months)
    features = list(table.registry.names)
    if traits:
        rows, extra = with_traits(rows, world.events)
        features += extra
    # cross-fitted: each customer is scored by the model fitted on the other fold, so every customer is
    # held out once and all of them are compared (less noise than one held-out half)
    fold = np.random.default_rng(seed).random(rows.height) < 0.5
    benefit, p0 = np.zeros(rows.height), np.zeros(rows.height)
    models = []
    for k in (False, True):
        up = fit_uplift(rows.filter(pl.Series(fold != k)), features, seed=seed, learner=learner)
        test = rows.filter(pl.Series(fold == k))
        benefit[fold == k] = -up.predict(test)
        p0[fold == k] = up.churn(test)[1]
        models.append(up)
    y, t = rows["churned"].to_numpy(), rows["treated"].to_numpy()
    value, cost, eff = rows["value"].to_numpy(), rows["cost"].to_numpy(), rows["effect"].to_numpy()
    gain = -eff * value - cost
    pick = target(benefit, value, cost)
    risky = np.zeros(rows.height, bool)
    risky[np.argsort(-p0, kind="stable")[:int(pick.sum())]] = True
    plans = {"persuadables (uplift, net of cost)": pick, "riskiest (same number)": risky,
             "everyone": np.ones(rows.height, bool), "oracle (true effects)": gain > 0}
    money = pl.DataFrame({"targeting": list(plans), "offers": [int(v.sum()) for v in plans.values()],
                          "money": [float(gain[v].sum()) for v in plans.values()],
                          "churners_kept": [float(-eff[v].sum()) for v in plans.values()]})
    from scipy.stats import spearmanr
    return {"analysis": analyse(rows), "true_ate": float(rows["effect"].mean()), "rows": rows, "uplift": models[0],
            "qini_model": qini(benefit, y, t), "qini_oracle": qini(-eff, y, t), "money": money,
            "spearman_truth": float(spearmanr(benefit, -eff).statistic),
            "harmful_share": float((rows["effect"] > 0).mean()), "held_out": rows.height}


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
