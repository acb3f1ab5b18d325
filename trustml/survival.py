"""Time to churn: a discrete-time hazard model, survival curves, pillar attributions and lifetime value.

How it is built (person-period expansion, no future features):

* **Snapshots over time** (event logs, the simulator; monthly snapshots): each snapshot row
  (customer, date ``d``, features at ``d``) becomes one row per month ahead ``k = 1..H`` the
  customer was *at risk and observed*: the feature values stay those of ``d`` (nothing later is
  known at ``d``) and the feature ``months_ahead = k`` says how far ahead the month is. The event
  in month ``k`` is *leaving the active set*: in the snapshot of ``d + (k-1)`` months but not in
  that of ``d + k`` months (contractual data: cancelled in that month; inactivity: became
  inactive). Rows stop after the event, and at the last snapshot date (or `until`): a customer
  whose future is not observed contributes only the months observed (right-censoring).
* **Flat tables** with a tenure column (months) and a churn flag: tenure is the time axis,
  churn the event in the customer's last month, right-censored otherwise; one row per tenure
  month ``t = 1..T`` with ``tenure_month = t`` (and its log, `TIME_INPUTS`) as the time inputs (the tenure column
  itself is left out). Curves are conditional on the current tenure ``T0``: ``h(T0 + 1), h(T0 + 2), ...``.
  Flat features are measured at the end, not month by month (the data has nothing else).

The hazard ``h(k | x)`` is a LightGBM binary classifier (`trustml.model.ChurnModel`, one thread,
seeded); its settings and rounds are chosen on held-out data (the latest outcome months for snapshots,
held-out customers' curves for flat tables; see `HAZARD_CANDIDATES`) and recorded in
``metadata['validation']``. A customer's survival curve
is ``S(k) = prod_{j<=k} (1 - h(j | x))``, conditional on being active at the snapshot.

Examples
--------
>>> from trustml.study import Study
>>> study = Study.load(n_customers=800, n_months=12, seed=1)
>>> surv = fit_survival(study.table, horizon=6)
>>> curves = surv.survival(study.table.latest())
>>> curves.shape[1], bool((curves[:, 1:] <= curves[:, :-1]).all())
(6, True)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit

from trustml.contract import ContractError, Problem
from trustml.features import FeatureRegistry, FeatureTable
from trustml.model import ChurnModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise

__all__ = ["SurvivalModel", "CLVAssumptions", "person_period", "fit_survival", "observed_outcomes", "pillar_survival", "pillar_shapley",
           "lifetime_table", "clv", "clv_table", "customers_now", "survival_table",
           "kaplan_meier", "survival_quality", "temporal_holdout", "brier_scores", "integrated_brier", "concordance_td",
           "true_hazard_grid", "true_survival", "value_per_month", "lifetime_value",
           "best_plan", "versus_truth", "plot_curves", "plot_whatif_curve", "plot_pillar_survival", "TIME_LABEL"]

TIME_LABEL = "Time (months ahead)"
SAVE_FORMAT = 1
TENURE_LABEL = "Time (tenure month)"
# The hazard model's settings. Rounds are never fixed and, unless parameters are passed, `fit_survival` picks one
# of a few candidates on data it holds out, then refits the winner on every row with the rounds found (scaled to
# the larger set):
# * snapshots: the customer-months with the latest outcome months (`VALIDATION_SHARE` of rows; the future is another
#   period, and later months are the nearest to it); the candidate and rounds with the lowest log-loss there.
# * flat tables: a seeded `VALIDATION_SHARE` of customers (no time order); the candidate and rounds whose survival
#   curves from tenure 0 (over every tenure month seen, as curves start at any current tenure) give those customers
#   the lowest integrated Brier score (`integrated_brier`), the quality
#   measure itself (the per-month log-loss kept improving long after the curves over many months got worse).
# Candidates: small, slowly learned trees; for snapshots, the same more heavily regularised (customer-months of one
# customer are alike, so a leaf needs many); for flat tables, small trees boosted from a logistic base
# (`trustml.model.fit_linear_base`, fitted on the training part only), which extrapolates along tenure.
HAZARD_DEFAULTS = dict(num_leaves=4, learning_rate=0.02, n_estimators=3000, min_child_samples=100, colsample_bytree=0.5,
                       subsample=0.8, reg_lambda=1.0, linear_base=False, early_stopping_rounds=50)
HAZARD_CANDIDATES = {"snapshots": ({}, {"min_child_samples": 1000, "reg_lambda": 10.0}),
                     "flat": ({"learning_rate": 0.05}, {"learning_rate": 0.05, "linear_base": True})}
VALIDATION_SHARE = 0.15
VALIDATION_STEP, VALIDATION_PATIENCE = 20, 100   # flat: rounds between checks; rounds without improvement before stopping
MAX_ROWS = 25_000   # snapshot rows (or flat customers) the hazard learns from at most: a seeded sample beyond it
SCORE_CHUNK_ROWS = 100_000  # rows scored at once (x horizon person-months: 1.2M rows, about 0.5 GB, at the default 12)
MAX_VALIDATION_UNITS = 1000                      # flat: held-out customers whose curves are scored
FALLBACK_ROUNDS = 100  # too few churns to hold any out: the first candidate, this many rounds
# Inputs derived from the time feature alone (no customer data), placed after it and explained with it (pillar
# 'time'). Flat tables: log(tenure month), so the logistic base (which sees numeric inputs linearly) can follow a
# hazard that falls fast in the first months and slowly later, as a Cox model's baseline hazard does.
TIME_INPUTS = {"tenure_month": ("log_tenure_month",), "months_ahead": ()}
_TIME_EXPRS = {"log_tenure_month": lambda: pl.col("tenure_month").cast(pl.Float64).clip(1, None).log()}


def _with_time_inputs(frame: pl.DataFrame, names) -> pl.DataFrame:
    return frame.with_columns(**{n: _TIME_EXPRS[n]() for n in names})


def _check_monthly(table: FeatureTable) -> None:
    if not table.is_flat and table.snapshots.every != "1mo":
        raise ContractError([Problem("features", "snapshot_date", f"time to churn needs monthly snapshots "
                                                                  f"(Snapshots(every='1mo')), got every={table.snapshots.every!r}")])


def _tenure_column(table: FeatureTable, tenure: str | None) -> str:
    name = tenure or ("tenure" if "tenure" in table.frame.columns else None)
    if name is None or name not in table.frame.columns:
        raise ContractError([Problem("data", tenure or "tenure", "a flat table needs a tenure column (months) for time to "
                                                                 "churn: pass tenure='<column>'")])
    return name


def _offset(k: pl.Expr) -> pl.Expr:
    return pl.col("snapshot_date").dt.offset_by(pl.format("{}mo", k))


def person_period(table: FeatureTable, horizon: int = 12, *, frame: pl.DataFrame | None = None, until: dt.date | None = None,
                  tenure: str | None = None) -> pl.DataFrame:
    """One row per customer x snapshot x observed month at risk: ``event`` (0/1) and the time feature.

    Columns: customer_id, snapshot_date, the registry's features, ``months_ahead`` (or
    ``tenure_month`` for flat tables), ``event``, ``outcome_date`` (when the month's outcome is known, snapshots
    only: the month's end; for inactivity churn, the end of the silence window that starts it). `frame`: which
    snapshot rows to expand (default: all of `table`); the active sets and labels are always read from the whole
    table. `until`: outcomes known only after this date are not observed.

    Inactivity churn (``Snapshots(churn='inactivity')``, e.g. CDNOW): the event in month ``k`` is the table's own
    label at the snapshot of ``d + (k-1)`` months: no activity in the label window from then on (e.g. 90 days), so
    month 1's hazard is the churn classifier's target. Leaving the active set would come only after
    ``active_gap_days`` of silence (a year for CDNOW), too late to see within most horizons.

    Examples
    --------
    >>> import datetime as dt
    >>> from trustml.features import FeatureRegistry, Snapshots
    >>> d = [dt.date(2024, m, 1) for m in (1, 2, 3)]
    >>> f = pl.DataFrame({"customer_id": ["a", "a", "a", "b"], "snapshot_date": d + d[:1], "churned": [0, 0, None, 1]})
    >>> t = FeatureTable(f, FeatureRegistry(()), Snapshots(), dt.datetime(2024, 3, 1))
    >>> person_period(t, 3).select("customer_id", "snapshot_date", "months_ahead", "event").rows()[:4]
    [('a', datetime.date(2024, 1, 1), 1, 0), ('a', datetime.date(2024, 1, 1), 2, 0), ('a', datetime.date(2024, 2, 1), 1, 0), ('b', datetime.date(2024, 1, 1), 1, 1)]
    """
    frame = table.frame if frame is None else frame
    names = table.registry.names
    if table.is_flat:
        col = _tenure_column(table, tenure)
        feats = [n for n in names if n != col]
        t = frame[col].cast(pl.Float64).fill_null(0).round().cast(pl.Int64).clip(0, None)
        base = frame.select("customer_id", "snapshot_date", *feats).with_columns(_T=t, _e=frame["churned"].cast(pl.Int8))
        out = (base.filter(pl.col("_T") > 0).with_columns(tenure_month=pl.int_ranges(1, pl.col("_T") + 1)).explode("tenure_month")
               .with_columns(event=((pl.col("tenure_month") == pl.col("_T")) & (pl.col("_e") == 1)).cast(pl.Int8)).drop("_T", "_e"))
        return out.with_columns(pl.col("tenure_month").cast(pl.Int64))
    _check_monthly(table)
    if table.snapshots.churn == "inactivity":
        return _person_period_inactivity(table, horizon, frame, until)
    last = table.frame["snapshot_date"].max()
    limit = min(last, until) if until is not None else last
    present = table.frame.select("customer_id", "snapshot_date").with_columns(_here=pl.lit(True))
    ks = pl.DataFrame({"months_ahead": list(range(1, horizon + 1))}, schema={"months_ahead": pl.Int64})
    rows = (frame.select("customer_id", "snapshot_date", *names).join(ks, how="cross")
            .with_columns(outcome_date=_offset(pl.col("months_ahead")))
            .filter(pl.col("outcome_date") <= limit))
    rows = rows.join(present.rename({"snapshot_date": "outcome_date"}), on=["customer_id", "outcome_date"], how="left")
    grp = ["customer_id", "snapshot_date"]
    rows = (rows.with_columns(event=pl.col("_here").is_null().cast(pl.Int8))
            .sort(*grp, "months_ahead")
            .with_columns(_before=(pl.col("event").cum_sum() - pl.col("event")).over(grp))
            .filter(pl.col("_before") == 0).drop("_here", "_before"))
    return rows


def _person_period_inactivity(table: FeatureTable, horizon: int, frame: pl.DataFrame, until: dt.date | None) -> pl.DataFrame:
    names, grp = table.registry.names, ["customer_id", "snapshot_date"]
    s = table.snapshots
    labels = table.frame.select("customer_id", pl.col("snapshot_date").alias("_at"), pl.col("churned").alias("event"))
    ks = pl.DataFrame({"months_ahead": list(range(1, horizon + 1))}, schema={"months_ahead": pl.Int64})
    rows = (frame.select(*grp, *names).join(ks, how="cross")
            .with_columns(_at=_offset(pl.col("months_ahead") - 1))
            .with_columns(outcome_date=pl.col("_at").dt.offset_by(s.lead).dt.offset_by(s.horizon))
            .join(labels, on=["customer_id", "_at"], how="left")
            .filter(pl.col("event").is_not_null()))      # active then, and its label window ended by the as-of date
    if until is not None:
        rows = rows.filter(pl.col("outcome_date") <= until)
    return (rows.with_columns(pl.col("event").cast(pl.Int8)).sort(*grp, "months_ahead")
            .with_columns(_n=pl.int_range(1, pl.len() + 1).over(grp),
                          _before=(pl.col("event").cum_sum() - pl.col("event")).over(grp))
            .filter((pl.col("_n") == pl.col("months_ahead")) & (pl.col("_before") == 0))   # consecutive months, to the event
            .select(*grp, *names, "months_ahead", "outcome_date", "event"))


def observed_outcomes(table: FeatureTable, frame: pl.DataFrame, horizon: int = 12, *, tenure: str | None = None) -> pl.DataFrame:
    """Per row of `frame`: ``time`` (event month, or the last month observed alive) and ``event`` (0/1), within `horizon`.

    Snapshots: months ahead of the snapshot. Flat tables: the tenure and the churn flag. Rows with no
    month observed have time 0 and event 0 (nothing to evaluate).
    """
    if table.is_flat:
        col = _tenure_column(table, tenure)
        return frame.select("customer_id", "snapshot_date", time=frame[col].cast(pl.Float64).fill_null(0).round().cast(pl.Int64),
                            event=frame["churned"].cast(pl.Int8))
    pp = person_period(table, horizon, frame=frame.select("customer_id", "snapshot_date", *table.registry.names))
    agg = pp.group_by("customer_id", "snapshot_date").agg(time=pl.col("months_ahead").max(), event=pl.col("event").max())
    return (frame.select("customer_id", "snapshot_date").join(agg, on=["customer_id", "snapshot_date"], how="left", maintain_order="left")
            .with_columns(pl.col("time").fill_null(0), pl.col("event").fill_null(0).cast(pl.Int8)))


@dataclass
class SurvivalModel:
    """A fitted discrete-time hazard model: per-month churn hazards, survival curves, lifetimes, explanations."""

    model: ChurnModel
    registry: FeatureRegistry
    horizon: int
    time_feature: str            # 'months_ahead' (snapshots) or 'tenure_month' (flat)
    tenure: str | None = None    # flat tables: the tenure column (time axis)
    metadata: dict = field(default_factory=dict)

    @property
    def time_inputs(self) -> list[str]:
        """The time feature and the inputs derived from it alone (`TIME_INPUTS`), in the model's order."""
        derived = TIME_INPUTS.get(self.time_feature, ())
        return [n for n in self.model.feature_names_in_ if n == self.time_feature or n in derived]

    @property
    def features(self) -> list[str]:
        """The hazard model's features besides the time inputs (the registry's, less the tenure column and `exclude`)."""
        t = set(self.time_inputs)
        return [n for n in self.model.feature_names_in_ if n not in t]

    def _periods(self, frame: pl.DataFrame, horizon: int, start: np.ndarray | None) -> pl.DataFrame:
        n = frame.height
        X = frame.select(self.features)
        rep = X[np.repeat(np.arange(n), horizon)]
        k = np.tile(np.arange(1, horizon + 1), n)
        if self.tenure is not None:
            t0 = (frame[self.tenure].cast(pl.Float64).fill_null(0).round().to_numpy() if start is None
                  else np.broadcast_to(np.asarray(start, dtype=float), (n,)))
            k = k + np.repeat(t0, horizon).astype(np.int64)
        rep = rep.with_columns(pl.Series(self.time_feature, k, dtype=pl.Int64))
        return _with_time_inputs(rep, self.time_inputs[1:]).select(list(self.model.feature_names_in_))

    def log_odds(self, frame: pl.DataFrame, horizon: int | None = None, *, start=None) -> np.ndarray:
        """Hazard log-odds, shape (rows, horizon): month k (column k-1) given active at its start."""
        h = horizon or self.horizon
        if frame.height == 0:
            return np.zeros((0, h))
        if frame.height > SCORE_CHUNK_ROWS:   # rows x horizon person-months: scored in slices, the memory of one
            last = self.__dict__.get("_last_scored")
            if start is None and last is not None and last[0] is frame and last[1] == h:
                return last[2].copy()   # the same large frame again (curves, lifetimes and CLV of every customer)
            starts = None if start is None else np.broadcast_to(np.asarray(start, dtype=float), (frame.height,))
            out = np.concatenate([self.log_odds(frame.slice(i, SCORE_CHUNK_ROWS), h,
                                                start=None if starts is None else starts[i:i + SCORE_CHUNK_ROWS])
                                  for i in range(0, frame.height, SCORE_CHUNK_ROWS)])
            if start is None:   # kept with the frame itself, so it is never taken for another frame
                self.__dict__["_last_scored"] = (frame, h, out)
            return out.copy()
        return self.model.decision_function(self._periods(frame, h, start)).reshape(frame.height, h)

    def hazards(self, frame: pl.DataFrame, horizon: int | None = None, *, start=None) -> np.ndarray:
        """Monthly churn hazards h(k), shape (rows, horizon)."""
        return expit(self.log_odds(frame, horizon, start=start))

    def survival(self, frame: pl.DataFrame, horizon: int | None = None, *, start=None) -> np.ndarray:
        """S(k) = prod_{j<=k} (1 - h(j)), k = 1..horizon: probability of still being here after k months.

        Flat tables: conditional on the current tenure (``start``: another tenure to start from, e.g. 0).
        """
        return np.cumprod(1.0 - self.hazards(frame, horizon, start=start), axis=1)

    def churn_by(self, frame: pl.DataFrame, months: int) -> np.ndarray:
        """P(churn within `months`) = 1 - S(months)."""
        return 1.0 - self.survival(frame, months)[:, -1]

    def save(self, path) -> Path:
        """Write `hazard.txt` (LightGBM's text format) and `hazard.json` (settings, features, registry, linear base); no pickle.

        hazard.json records the SHA-256 of hazard.txt and of its own content: `load` refuses edited or mixed files.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        m = self.model
        text = m.booster_.model_to_string(num_iteration=m.n_iter_)
        meta = {"format_version": SAVE_FORMAT, "horizon": self.horizon, "time_feature": self.time_feature, "tenure": self.tenure,
                "params": {k: v for k, v in m.get_params().items() if k != "monotone_constraints"},
                "feature_names": list(m.feature_names_in_), "categories": m.categories_,
                "n_iter": int(m.n_iter_), "linear_base": getattr(m, "linear_", None), "registry": self.registry.to_dict(),
                "metadata": self.metadata, "checksums": {"hazard.txt": hashlib.sha256(text.encode()).hexdigest()}}
        meta = json.loads(json.dumps(meta, default=str))
        meta["integrity"] = _digest(meta)
        (path / ".hazard.txt.tmp").write_text(text)
        (path / ".hazard.json.tmp").write_text(json.dumps(meta, indent=2))
        (path / ".hazard.txt.tmp").replace(path / "hazard.txt")
        (path / ".hazard.json.tmp").replace(path / "hazard.json")
        return path

    @classmethod
    def load(cls, path) -> SurvivalModel:
        """Read a folder written by `save`, checking both files first; any problem is one `ContractError`."""
        import lightgbm as lgb

        from trustml.model import read_checked
        meta, text = read_checked(Path(path), "hazard", SAVE_FORMAT, kind="survival model", redo="refit")
        model = ChurnModel(**meta["params"])
        model.booster_ = lgb.Booster(model_str=text.decode("utf-8"))
        model.feature_names_in_ = np.array(meta["feature_names"], dtype=object)
        model.n_features_in_ = len(model.feature_names_in_)
        model.categories_ = meta["categories"]
        model.classes_ = np.array([0, 1])
        model.n_iter_ = meta["n_iter"]
        model.linear_ = meta["linear_base"]
        return cls(model, FeatureRegistry.from_dict(meta["registry"]), meta["horizon"], meta["time_feature"], meta["tenure"],
                   meta["metadata"])


def _digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fit_survival(table: FeatureTable, horizon: int = 12, *, frame: pl.DataFrame | None = None, until: dt.date | None = None,
                 tenure: str | None = None, exclude=None, seed: int = 0, **params) -> SurvivalModel:
    """Fit the monthly hazard on person-period rows (see the module docstring).

    frame: the snapshot rows (or flat customers) to learn from (default: all). until: outcome months
    ending after this date are unseen (a temporal hold-out: train with ``until=test date``).
    exclude: features to leave out. Default: none for snapshots (their features are point-in-time);
    for flat tables, numeric features whose rank correlation with the tenure is 0.8 or more (e.g.
    Telco's ``TotalCharges``, about tenure x price: measured at the end, it tells the model how long
    the customer stayed), recorded in ``metadata['excluded']``. params: `ChurnModel` parameters over
    `HAZARD_DEFAULTS` (then only rounds are chosen; else a candidate of `HAZARD_CANDIDATES` too, see the
    comment above them); ``metadata['params']`` and ``metadata['validation']`` record the choice.
    Deterministic for a seed (and the rows' order: bagging samples rows by position). Beyond `MAX_ROWS` rows (and
    no `frame`), a seeded sample of them is expanded, recorded in ``metadata['sampled']``.
    """
    auto = exclude is None
    exclude = list(_tracks_tenure(table, tenure) if auto and table.is_flat else (exclude or ()))
    unknown = [c for c in exclude if c not in table.registry.names]
    if unknown:
        raise ContractError([Problem("features", c, "asked to exclude, but not a feature") for c in unknown])
    sampled = None
    if frame is None and table.frame.height > MAX_ROWS:
        # consecutive monthly snapshots of one customer share most of their future: a seeded sample of snapshot rows
        # loses little and bounds the cost (active sets are still read from the whole table)
        keep = np.sort(np.random.default_rng(seed).choice(table.frame.height, MAX_ROWS, replace=False))
        frame = table.frame[keep]
        sampled = {"rows": MAX_ROWS, "of_rows": table.frame.height}
    pp = person_period(table, horizon, frame=frame, until=until, tenure=tenure)
    if pp.height == 0 or pp["event"].n_unique() < 2:
        raise ContractError([Problem("features", None, f"time to churn: {pp.height:,} customer-months at risk and "
                                                       f"{int(pp['event'].sum()) if pp.height else 0} churns observed; need both churns and stays")])
    flat = table.is_flat
    time_feature = "tenure_month" if flat else "months_ahead"
    col = _tenure_column(table, tenure) if flat else None
    feats = [n for n in table.registry.names if n != col and n not in exclude]
    derived = TIME_INPUTS[time_feature]
    X = _with_time_inputs(pp.select(*feats, time_feature), derived)
    y = pp["event"].to_numpy()
    if flat:   # validation: a seeded share of customers, all their rows
        ids = pp["customer_id"].unique().sort()
        pick = np.random.default_rng(seed).permutation(ids.len()) < VALIDATION_SHARE * ids.len()
        held = pp["customer_id"].replace_strict(dict(zip(ids.to_list(), pick.tolist(), strict=True)), return_dtype=pl.Boolean).to_numpy()
        # scored over the whole tenure range, not only `horizon`: curves start from any current tenure
        curves = _held_out_curves(pp, held, feats, time_feature, int(pp[time_feature].max()), seed)
        curves = (_with_time_inputs(curves[0], derived), *curves[1:])
    else:      # validation: the latest outcome months
        when = pp["outcome_date"].to_numpy()
        held = when >= np.sort(when)[int((1 - VALIDATION_SHARE) * (len(when) - 1))]
        held = held if held.mean() < 0.5 else when > np.sort(when)[int((1 - VALIDATION_SHARE) * (len(when) - 1))]
        curves = None
    cands = [{**HAZARD_DEFAULTS, **params}] if params else [{**HAZARD_DEFAULTS, **c} for c in HAZARD_CANDIDATES["flat" if flat else "snapshots"]]
    trials = _validate(X, y, held, cands, seed, curves)
    best = min(range(len(trials)), key=lambda i: (np.nan_to_num(trials[i]["score"], nan=-1.0), i))
    chosen = cands[best]
    # refit on every row, with the chosen rounds scaled to the larger set
    rounds = max(1, int(np.ceil(trials[best]["rounds"] * len(y) / max(1, int((~held).sum())))))
    model = ChurnModel(**{**chosen, "n_estimators": rounds, "early_stopping": False}, random_state=seed, n_jobs=1)
    model.fit(X, y)
    meta = {"person_period_rows": pp.height, "events": int(pp["event"].sum()), "rounds": int(model.n_iter_),
            **({"sampled": sampled} if sampled else {}),
            "params": {k: chosen[k] for k in ("num_leaves", "min_child_samples", "learning_rate", "linear_base") if k in chosen},
            "validation": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.items()} for t in trials],
            "until": None if until is None else str(until), "excluded": list(exclude), "event_definition":
            ("churn flag in the last tenure month; right-censored otherwise" if flat else
             "left the active set (in the snapshot of month k-1, not in that of month k); censored at the last snapshot")}
    return SurvivalModel(model, table.registry, horizon, time_feature, col, meta)


def _held_out_curves(pp: pl.DataFrame, held: np.ndarray, feats: list[str], time_feature: str, horizon: int,
                      seed: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The held-out customers' snapshots (flat: customers from tenure 0) as person-period rows for months 1..H, and
    what was observed of each: time (event month or last month seen) and event, within H. At most `MAX_VALIDATION_UNITS`."""
    unit = ["customer_id", "snapshot_date"]
    units = (pp.filter(pl.Series(held)).group_by(unit, maintain_order=True)
             .agg(*[pl.col(f).first() for f in feats], time=pl.col(time_feature).max(), event=pl.col("event").max()))
    if units.height > MAX_VALIDATION_UNITS:
        units = units[np.sort(np.random.default_rng(seed).choice(units.height, MAX_VALIDATION_UNITS, replace=False))]
    time, event = units["time"].to_numpy(), units["event"].to_numpy()
    event = np.where(time > horizon, 0, event)
    time = np.minimum(time, horizon)
    rows = units.select(feats)[np.repeat(np.arange(units.height), horizon)].with_columns(
        pl.Series(time_feature, np.tile(np.arange(1, horizon + 1), units.height), dtype=pl.Int64))
    return rows, time, event


def _validate(X: pl.DataFrame, y: np.ndarray, held: np.ndarray, candidates: list[dict], seed: int,
              curves: tuple[pl.DataFrame, np.ndarray, np.ndarray] | None) -> list[dict]:
    """Per candidate, trained on the rows not `held`: the rounds with the best held-out score and that score
    ('metric'): the log-loss of the held rows (`curves` None), or the integrated Brier score of the held-out
    customers' `curves` (checked every `VALIDATION_STEP` rounds). The linear base, if any, is fitted on the
    training rows only. Too few churns or stays held out: the first candidate with `FALLBACK_ROUNDS`, score NaN."""
    import lightgbm as lgb

    from trustml.model import fit_linear_base, linear_score
    probe = ChurnModel()
    Xm = probe._matrix(X, fit=True)
    cat = [i for i, c in enumerate(X.columns) if c in probe.categories_]
    tr, va = ~held, held
    yf = y.astype(float)
    if curves is None:
        few = min(y[va].sum(), (y[va] == 0).sum(), y[tr].sum()) < 5
    else:
        rows, time, event = curves
        Xv = probe._matrix(rows, fit=False)
        H = rows.height // max(1, len(time))
        seen = time > 0
        few = min(event.sum(), seen.sum() - event.sum(), y[tr].sum()) < 5
    if few:
        return [{"rounds": FALLBACK_ROUNDS, "metric": None, "score": float("nan") if i == 0 else float("inf")} for i in range(len(candidates))]
    out = []
    for cand in candidates:
        m = ChurnModel(**{k: v for k, v in cand.items() if k != "early_stopping"}, random_state=seed, n_jobs=1)
        lin = fit_linear_base(Xm[tr], yf[tr], cat) if m.linear_base else None
        dtrain = lgb.Dataset(Xm[tr], yf[tr], categorical_feature=cat, free_raw_data=False,
                             init_score=None if lin is None else linear_score(lin, Xm[tr]))
        if curves is None:
            dvalid = lgb.Dataset(Xm[va], yf[va], reference=dtrain, init_score=None if lin is None else linear_score(lin, Xm[va]))
            b = lgb.train(m._params(), dtrain, m.n_estimators, valid_sets=[dvalid],
                          callbacks=[lgb.early_stopping(m.early_stopping_rounds, verbose=False)])
            out.append({"rounds": int(b.best_iteration or m.n_estimators), "metric": "log_loss",
                        "score": float(b.best_score["valid_0"]["binary_logloss"])})
            continue
        best = {"rounds": 0, "metric": "integrated_brier", "score": float("inf")}
        # the held-out raw score so far: each check adds only the trees since the last one (predicting every tree
        # again at each check grew with the square of the rounds)
        sofar = {"rounds": 0, "z": np.zeros(Xv.shape[0]) + (0.0 if lin is None else linear_score(lin, Xv))}

        def check(env, best=best, sofar=sofar):
            it = env.iteration + 1
            if it % VALIDATION_STEP and it != env.end_iteration:
                return
            sofar["z"] = sofar["z"] + env.model.predict(Xv, raw_score=True, start_iteration=sofar["rounds"],
                                                        num_iteration=it - sofar["rounds"])
            sofar["rounds"] = it
            z = sofar["z"]
            S = np.cumprod(1 - expit(z).reshape(-1, H), axis=1)
            score = integrated_brier(S[seen], time[seen], event[seen])
            if score < best["score"]:
                best.update(rounds=it, score=score)
            elif it - best["rounds"] >= VALIDATION_PATIENCE:
                raise lgb.callback.EarlyStopException(best["rounds"] - 1, [])
        lgb.train(m._params(), dtrain, m.n_estimators, callbacks=[check])
        out.append(best)
    return out


def _tracks_tenure(table: FeatureTable, tenure: str | None, threshold: float = 0.8) -> list[str]:
    col = _tenure_column(table, tenure)
    f = table.frame
    out = []
    for n in table.registry.names:
        if n == col or not f.schema[n].is_numeric():
            continue
        pair = f.select(pl.col(n).cast(pl.Float64).rank(), pl.col(col).cast(pl.Float64).rank()).drop_nulls()
        if pair.height > 2 and abs(pair.select(pl.corr(n, col)).item() or 0.0) >= threshold:
            out.append(n)
    return out


def value_per_month(frame: pl.DataFrame, mapping=None) -> tuple[np.ndarray, str]:
    """Each customer's value per month for CLV, and where it came from: the mapping's `monthly_value`
    column, else `monthly_price`, else 1 per month (then CLV is in months of value)."""
    col = mapping.monthly_value if mapping is not None else "monthly_price"
    if col and col in frame.columns:
        return frame[col].cast(pl.Float64).fill_null(0).to_numpy(), col
    return np.ones(frame.height), "not in the data: 1 per month assumed (CLV in months of value; map monthly_value)"


def best_plan(surv: SurvivalModel, row: pl.DataFrame, *, max_levers: int = 1, grid: int = 5) -> dict:
    """The lever setting (up to `max_levers` levers, `grid` values each) that adds the most expected months
    within the horizon for one customer; {} when no lever helps. What the explorer's slider would find."""
    from trustml.whatif import _candidates, _set_lever, levers
    lvs = levers(surv.registry)
    if row.height != 1 or not lvs:
        return {}
    combos = _candidates(lvs, row, max_levers, grid)
    frame = pl.concat([row] * len(combos), how="vertical")
    for lv in lvs:
        frame = _set_lever(frame, lv, [c.get(lv.name) for c in combos], surv.registry)
    S = surv.survival(frame)
    months = ((np.column_stack([np.ones(len(combos)), S[:, :-1]]) + S) / 2).sum(axis=1)
    best = int(np.argmax(months))
    return combos[best] if months[best] > months[0] + 1e-9 else {}


def versus_truth(table: FeatureTable, world, horizon: int = 6, *, assumptions: CLVAssumptions | None = None,
                 seed: int = 0) -> dict:
    """On the simulator: a hold-out `horizon` months before the end (`temporal_holdout`), the model fitted on
    outcomes to it, beside Kaplan-Meier and the true curves; CLV of the top decile (by model CLV) beside true CLV.

    Returns {'test_date', 'quality' (C^td, integrated Brier), 'top_decile' (one row: customers, mean
    model and true CLV, their ratio), 'clv' (per top-decile customer, pseudonymised)}.
    """
    test_date, test = temporal_holdout(table, horizon)
    surv = fit_survival(table, horizon, until=test_date, seed=seed)
    obs = observed_outcomes(table, test, horizon)
    t, e = obs["time"].to_numpy(), obs["event"].to_numpy()
    pp = person_period(table, horizon, until=test_date)
    tr = pp.group_by("customer_id", "snapshot_date").agg(pl.col("months_ahead").max(), pl.col("event").max())
    km = np.tile(kaplan_meier(tr["months_ahead"].to_numpy(), tr["event"].to_numpy(), horizon), (test.height, 1))
    S, S_true = surv.survival(test), true_survival(world, test, horizon)
    quality = survival_quality({"trustml (LightGBM hazard)": S, "Kaplan-Meier": km, "truth (simulator's hazards)": S_true}, t, e)
    prices = test.join(world.customers.select("customer_id", "monthly_price"), on="customer_id", how="left", maintain_order="left")
    v = prices["monthly_price"].to_numpy()
    model_clv, true_clv = clv(surv, test, v, assumptions), clv(surv, test, v, assumptions, survival=S_true)
    top = np.argsort(-model_clv, kind="stable")[:max(1, test.height // 10)]
    per = pl.DataFrame({"customer": pseudonymise(test["customer_id"].gather(top).to_list()), "value_per_month": v[top],
                        "clv_model": model_clv[top], "clv_true": true_clv[top]})
    summary = pl.DataFrame({"customers": [len(top)], "mean_clv_model": [float(model_clv[top].mean())],
                            "mean_clv_true": [float(true_clv[top].mean())],
                            "ratio": [float(model_clv[top].mean() / true_clv[top].mean())]})
    return {"test_date": test_date, "quality": quality, "top_decile": summary, "clv": per}


# --- explanations -------------------------------------------------------------------------------

def _pillar_groups(surv: SurvivalModel) -> tuple[list[str], list[list[int]]]:
    names = list(surv.model.feature_names_in_)
    time = set(surv.time_inputs)
    feats = [(i, n) for i, n in enumerate(names) if n not in time]
    pillars = [p for p in surv.registry.pillars if any(surv.registry.pillar_of(n) == p for _, n in feats)]
    groups = [[i for i, n in feats if surv.registry.pillar_of(n) == p] for p in pillars]
    return pillars + ["time"], groups + [[i for i, n in enumerate(names) if n in time]]


def pillar_survival(surv: SurvivalModel, frame: pl.DataFrame, months=(3, 6, 12), *, id_column: str = "customer_id") -> pl.DataFrame:
    """How each pillar moves each customer's probability of still being here after k months.

    Exact scheme. Per month j, LightGBM's exact TreeSHAP splits the hazard log-odds
    ``z_j = b + sum_f phi_jf`` (``b``: the model's expected log-odds). With ``g(z) = log(1 - expit(z))``,
    ``log S(k) = sum_{j<=k} g(z_j)``. Each month's change ``g(z_j) - g(b)`` is shared among features in
    proportion to ``phi_jf`` (the secant slope ``(g(z_j) - g(b)) / (z_j - b)``, or ``g'(b)`` when equal).
    So, per customer and k, **the pillars' ``log_survival`` contributions sum exactly to
    ``log S(k) - log S_base(k)``**, with ``S_base(k) = (1 - expit(b))^k`` the curve of an average
    customer-month. ``points`` maps them to probability the same way: each pillar's share of
    ``log S - log S_base`` times ``S(k) - S_base(k)``, in percentage points; **they sum exactly to
    ``100 * (S(k) - S_base(k))``**. Positive: the pillar keeps the customer longer. The pillar
    'time' is the months-ahead (or tenure) feature and the inputs derived from it (`TIME_INPUTS`): how the hazard
    changes with time itself.
    For flat tables it is the tenure month. It is not a Shapley value of log S (the month-level SHAP values are); pillar Shapley values
    of S(k) would need ``2^pillars`` evaluations per customer.

    Returns one row per customer x month x pillar: customer (pseudonymised), months, pillar,
    label, log_survival, points, survival (S(k)), base_survival (S_base(k)).
    """
    months = sorted({int(m) for m in months if 1 <= int(m)})
    H = max(months)
    n = frame.height
    X = surv.model.transform_matrix(surv._periods(frame, H, None))
    contrib = surv.model.booster_.predict(X, pred_contrib=True, num_iteration=surv.model.n_iter_)
    lin_phi, lin_base = surv.model.linear_contributions(X)      # a linear base, if any: exact, coefficient x (x - mean)
    phi, base = (contrib[:, :-1] + lin_phi).reshape(n, H, -1), (contrib[:, -1] + lin_base).reshape(n, H)
    z = base + phi.sum(axis=2)
    g = lambda v: -np.logaddexp(0.0, v)  # noqa: E731  log(1 - expit(v))
    dz = z - base
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(np.abs(dz) > 1e-12, (g(z) - g(base)) / dz, -expit(base))
    per_month = phi * slope[:, :, None]                          # contributions to g(z_j) - g(b), per month
    cum = np.cumsum(per_month, axis=1)                           # to log S(k) - log S_base(k)
    logS, logS0 = np.cumsum(g(z), axis=1), np.cumsum(g(base), axis=1)
    pillars, groups = _pillar_groups(surv)
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(n)]
    rows = []
    for m in months:
        S, S0 = np.exp(logS[:, m - 1]), np.exp(logS0[:, m - 1])
        d_log = logS[:, m - 1] - logS0[:, m - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(np.abs(d_log) > 1e-12, (S - S0) / d_log, S0)
        for p, idx in zip(pillars, groups, strict=True):
            a = cum[:, m - 1, idx].sum(axis=1)
            rows.append(pl.DataFrame({"customer": ids, "months": m, "pillar": p,
                                      "label": (TENURE_LABEL if surv.tenure else TIME_LABEL) if p == "time" else PILLARS[p].label,
                                      "log_survival": a, "points": 100 * a * scale, "survival": S, "base_survival": S0}))
    return pl.concat(rows).sort("customer", "months", maintain_order=True)


def _linear(surv: SurvivalModel, X: np.ndarray):
    from trustml.model import linear_score
    lin = getattr(surv.model, "linear_", None)
    return 0.0 if lin is None else linear_score(lin, X)


def pillar_shapley(surv: SurvivalModel, frame: pl.DataFrame, background: pl.DataFrame, months=(3, 6, 12), *,
                   n_background: int = 50, seed: int = 0, id_column: str = "customer_id") -> pl.DataFrame:
    """Exact Shapley values of S(k) itself over the pillars, by enumerating every pillar coalition (a few customers).

    Players: the pillars (the time feature is the axis, not a player). Value of a coalition C:
    ``v(C) = mean_b S_k(x_C, b_rest)``: the customer's own values for C's features, a background
    customer's for the others (interventional), averaged over `n_background` seeded rows of
    `background`. So, per customer and k, **the pillars' ``points`` sum exactly to
    ``100 * (S(k) - base_survival(k))``** with ``base_survival(k) = mean_b S_k(b)``. Cost:
    ``2^pillars x n_background x H`` hazard evaluations per customer (at most 10 pillars).

    Returns customer (pseudonymised), months, pillar, label, points, survival, base_survival.
    """
    from math import factorial
    months = sorted({int(m) for m in months if 1 <= int(m)})
    H = max(months)
    pillars, groups = _pillar_groups(surv)
    pillars, groups = pillars[:-1], groups[:-1]
    P = len(pillars)
    if P > 10:
        raise ValueError(f"{P} pillars: 2^{P} coalitions per customer is too many; use pillar_survival")
    rng = np.random.default_rng(seed)
    bg = background[np.sort(rng.choice(background.height, min(n_background, background.height), replace=False))]
    Xb = surv.model.transform_matrix(surv._periods(bg, H, None))                 # (B*H, F+1)
    masks = (np.arange(2 ** P)[:, None] >> np.arange(P)[None, :]) & 1            # coalition x pillar
    cols = np.zeros((2 ** P, Xb.shape[1]), dtype=bool)
    for p, idx in enumerate(groups):
        cols[:, idx] = masks[:, [p]].astype(bool)
    size = masks.sum(axis=1)
    w_in = np.array([factorial(s) * factorial(P - s - 1) / factorial(P) for s in range(P)])
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    out = []
    for r in range(frame.height):
        Xx = np.tile(surv.model.transform_matrix(surv._periods(frame[r], H, None)), (bg.height, 1))
        v = np.empty((2 ** P, H))
        for lo in range(0, 2 ** P, 64):
            c = cols[lo:lo + 64]
            X = np.where(c[:, None, :], Xx[None], Xb[None]).reshape(-1, Xb.shape[1])
            h = expit(surv.model.booster_.predict(X, raw_score=True, num_iteration=surv.model.n_iter_) + _linear(surv, X))
            v[lo:lo + 64] = np.cumprod(1 - h.reshape(len(c), bg.height, H), axis=2).mean(axis=1)
        phi = np.zeros((P, H))
        for p in range(P):
            without = np.nonzero(masks[:, p] == 0)[0]
            phi[p] = (w_in[size[without]][:, None] * (v[without + 2 ** p] - v[without])).sum(axis=0)
        for m in months:
            out.append(pl.DataFrame({"customer": ids[r], "months": m, "pillar": pillars, "label": [PILLARS[p].label for p in pillars],
                                     "points": 100 * phi[:, m - 1], "survival": v[-1, m - 1], "base_survival": v[0, m - 1]}))
    return pl.concat(out)


# --- lifetime and value -------------------------------------------------------------------------

def lifetime_table(surv: SurvivalModel, frame: pl.DataFrame, *, months=(3, 6, 12), id_column: str = "customer_id") -> pl.DataFrame:
    """Per customer: expected months within the horizon, P(churn by each of `months`), S(H), and a tail note.

    expected_months: restricted mean lifetime over the horizon H, ``sum_k (S(k-1) + S(k)) / 2``
    (a churner leaves mid-month on average). tail_months_if_constant: expected months *beyond* H if
    the month-H hazard held constant, ``S(H) (1 / h(H) - 1/2)``: an extrapolation, shown apart.
    """
    H = surv.horizon
    h = surv.hazards(frame, H)
    S = np.cumprod(1 - h, axis=1)
    S_prev = np.column_stack([np.ones(frame.height), S[:, :-1]])
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    out = {"customer": ids, "expected_months": ((S_prev + S) / 2).sum(axis=1)}
    for m in months:
        if m <= H:
            out[f"churn_by_{m}m"] = 1 - S[:, m - 1]
    out[f"survival_{H}m"] = S[:, -1]
    out["tail_months_if_constant"] = S[:, -1] * (1 / np.clip(h[:, -1], 1e-6, None) - 0.5)
    return pl.DataFrame(out)


@dataclass(frozen=True)
class CLVAssumptions:
    """How lifetime value is worked out; printed beside every CLV figure.

    A customer pays `value` (per month) at the start of each month they are still here: month 1 for
    sure (they are active now), month k+1 with probability S(k); times `margin`, discounted at
    `annual_discount` (monthly rate ``(1 + annual)^(1/12) - 1``). By default (`tail`) the months beyond the
    horizon count too, with the last month's hazard held constant (an extrapolation, stated in `lines`): a
    *lifetime* value, the one `trustml.study.Study.clv` and the notebook use (`lifetime_value`); ``tail=False``
    restricts it to the horizon.
    """

    margin: float = 0.6
    annual_discount: float = 0.10
    tail: bool = True
    currency: str = "$"
    value_source: str = "monthly_price"

    @property
    def monthly_rate(self) -> float:
        return (1 + self.annual_discount) ** (1 / 12) - 1

    def lines(self, horizon: int | None = None) -> list[str]:
        span = f"over the next {horizon} months" if horizon else "over the horizon"
        return [f"value per month: '{self.value_source}', paid at the start of each month the customer is still here",
                f"margin: {self.margin:.0%} of that value",
                f"discount rate: {self.annual_discount:.0%} a year ({self.monthly_rate:.3%} a month)",
                f"lifetime {span} from each customer's survival curve" +
                ("; beyond it, the last month's hazard held constant (an extrapolation)" if self.tail else "; nothing beyond it")]


def clv(surv: SurvivalModel, frame: pl.DataFrame, value, assumptions: CLVAssumptions | None = None, *,
        survival: np.ndarray | None = None) -> np.ndarray:
    """Customer lifetime value per row: ``margin * value * sum_{k=0}^{H-1} S(k) / (1 + r)^k`` (S(0) = 1), plus the tail
    ``S(H) / (1 + r)^H / (1 - (1 - h(H)) / (1 + r))`` (month-H hazard held) unless ``assumptions.tail`` is False.

    `survival`: curves to use instead of the model's (e.g. the simulator's true curves), shape (rows, H).
    `lifetime_value` reads the value per month from the data and states the assumptions: use it for the figures.

    Examples
    --------
    >>> S = np.array([[0.5, 0.25]])            # h(2) = 0.5: beyond month 2, 0.25 * (1 + 0.5 + 0.25 + ...) = 0.5 more
    >>> one = pl.DataFrame({"x": [1]})
    >>> float(clv(None, one, [100.0], CLVAssumptions(margin=1.0, annual_discount=0.0), survival=S)[0])
    200.0
    >>> float(clv(None, one, [100.0], CLVAssumptions(margin=1.0, annual_discount=0.0, tail=False), survival=S)[0])
    150.0
    """
    a = assumptions or CLVAssumptions()
    S = surv.survival(frame) if survival is None else np.asarray(survival, dtype=float)
    n, H = S.shape
    v = np.broadcast_to(np.asarray(value, dtype=float), (n,))
    disc = (1 + a.monthly_rate) ** -np.arange(H)
    paid = np.column_stack([np.ones(n), S[:, :-1]])
    total = (paid * disc).sum(axis=1)
    if a.tail:
        h_last = 1 - np.divide(S[:, -1], S[:, -2] if H > 1 else np.ones(n), out=np.ones(n), where=(S[:, -2] if H > 1 else np.ones(n)) > 0)
        q = (1 - np.clip(h_last, 1e-6, 1)) / (1 + a.monthly_rate)
        total = total + S[:, -1] * (1 + a.monthly_rate) ** -H / (1 - q)
    return a.margin * v * total


def lifetime_value(surv: SurvivalModel, frame: pl.DataFrame, mapping=None, assumptions: CLVAssumptions | None = None, *,
                   survival: np.ndarray | None = None) -> tuple[np.ndarray, CLVAssumptions]:
    """The one CLV computation behind every figure: (CLV per row of `frame`, the assumptions used).

    Value per month from `value_per_month` (`mapping`'s `monthly_value`, else `monthly_price`, else 1),
    recorded as ``value_source`` in the returned assumptions (default `CLVAssumptions`: 60% margin, 10% a
    year, tail beyond the horizon); then `clv`. `trustml.study.Study.clv` and notebook 11 both call this.

    Examples
    --------
    >>> S = np.array([[0.9, 0.8], [0.5, 0.25]])
    >>> value, a = lifetime_value(None, pl.DataFrame({"monthly_price": [10.0, 20.0]}), survival=S)
    >>> a.value_source, value.round(1).tolist()
    ('monthly_price', [51.3, 23.8])
    """
    from dataclasses import replace
    v, source = value_per_month(frame, mapping)
    a = replace(assumptions or CLVAssumptions(), value_source=source)
    return clv(surv, frame, v, a, survival=survival), a


def clv_table(surv: SurvivalModel, frame: pl.DataFrame, value, assumptions: CLVAssumptions | None = None, *,
              id_column: str = "customer_id") -> pl.DataFrame:
    """Per customer (pseudonymised): value per month, expected months, CLV; sorted by CLV, highest first."""
    life = lifetime_table(surv, frame, id_column=id_column)
    v = np.broadcast_to(np.asarray(value, dtype=float), (frame.height,))
    return (life.select("customer", "expected_months", f"survival_{surv.horizon}m")
            .with_columns(value_per_month=pl.Series(v), clv=pl.Series(clv(surv, frame, v, assumptions)))
            .sort("clv", descending=True, maintain_order=True))


def customers_now(table: FeatureTable) -> pl.DataFrame:
    """The customers to give curves to: the latest snapshot (event logs, the simulator), or a flat table's customers
    not marked as churned (curves conditional on their current tenure)."""
    return table.frame.filter(pl.col("churned").fill_null(0) == 0) if table.is_flat else table.latest()


def survival_table(surv: SurvivalModel, frame: pl.DataFrame, value, assumptions: CLVAssumptions | None = None, *,
                   months=(3, 6, 12), id_column: str = "customer_id") -> pl.DataFrame:
    """Per customer (pseudonymised, in `frame`'s order): S(k) for k = 1..H (``survival_{k}m``), expected months
    within H, churn by each of `months` (those within H), value per month and CLV (`clv` under `assumptions`).

    Examples
    --------
    >>> from trustml.study import Study
    >>> study = Study.load(n_customers=600, n_months=12, seed=2)
    >>> surv = fit_survival(study.table, horizon=3)
    >>> t = survival_table(surv, study.table.latest().head(4), 50.0)
    >>> t.columns[:4], t.height
    (['customer', 'survival_1m', 'survival_2m', 'survival_3m'], 4)
    """
    a = assumptions or CLVAssumptions()
    H = surv.horizon
    S = surv.survival(frame, H)
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    v = np.broadcast_to(np.asarray(value, dtype=float), (frame.height,))
    out = {"customer": ids, **{f"survival_{k}m": S[:, k - 1] for k in range(1, H + 1)},
           "expected_months": ((np.column_stack([np.ones(frame.height), S[:, :-1]]) + S) / 2).sum(axis=1)}
    out.update({f"churn_by_{m}m": 1 - S[:, m - 1] for m in months if 1 <= m <= H})
    out.update(value_per_month=v, clv=clv(surv, frame, v, a, survival=S))
    return pl.DataFrame(out)


# --- quality metrics (discrete time, months 1..H) -----------------------------------------------

def kaplan_meier(time, event, horizon: int) -> np.ndarray:
    """Kaplan-Meier S(k), k = 1..horizon, for discrete times (an event in month `time`, or observed alive through it)."""
    time, event = np.asarray(time), np.asarray(event).astype(bool)
    out, s = np.empty(horizon), 1.0
    for k in range(1, horizon + 1):
        at_risk = np.sum(time >= k)
        d = np.sum((time == k) & event)
        s *= 1 - d / at_risk if at_risk else 1.0
        out[k - 1] = s
    return out


def _censor_survival(time, event, horizon: int) -> np.ndarray:
    """G(k) = P(observed through month k), k = 1..horizon: Kaplan-Meier of censoring (events first at ties)."""
    time, event = np.asarray(time), np.asarray(event).astype(bool)
    out, g = np.empty(horizon), 1.0
    for k in range(1, horizon + 1):
        out[k - 1] = g                     # observed through k unless censored after an earlier month
        at_risk = np.sum((time > k) | ((time == k) & ~event))
        c = np.sum((time == k) & ~event)
        g *= 1 - c / at_risk if at_risk else 1.0
    return out


def brier_scores(S: np.ndarray, time, event) -> np.ndarray:
    """IPCW Brier score (Graf et al.) at each month k = 1..H: ``mean_i w_i(k) (1{T_i > k} - S_i(k))^2``.

    ``time``: the churn month (event) or the last month observed alive (censored). Weights: ``1 / G(T_i)``
    for an event by month k, ``1 / G(k)`` for a customer known alive after k,
    0 for one censored before k; ``G`` is the censoring curve of the same customers. Months where no
    customer is observed are NaN.
    """
    S = np.asarray(S, dtype=float)
    time, event = np.asarray(time).astype(int), np.asarray(event).astype(bool)
    H = S.shape[1]
    G = _censor_survival(time, event, H)
    out = np.full(H, np.nan)
    for k in range(1, H + 1):
        died = event & (time <= k)
        alive = (time > k) | ((time == k) & ~event)   # censored at k: observed alive through month k
        if not (alive | died).any():
            continue
        gk = G[np.clip(time, 1, H) - 1]
        w = np.where(died, 1 / np.where(gk > 0, gk, np.inf), 0.0) + np.where(alive, 1 / G[k - 1] if G[k - 1] > 0 else 0.0, 0.0)
        out[k - 1] = np.mean(w * (alive.astype(float) - S[:, k - 1]) ** 2)
    return out


def integrated_brier(S: np.ndarray, time, event, months: int | None = None) -> float:
    """Mean of the monthly IPCW Brier scores over months 1..`months` (default: the last month anyone is seen alive)."""
    bs = brier_scores(S, time, event)
    last = int(min(np.max(time), S.shape[1])) if months is None else months
    return float(np.nanmean(bs[:last]))


def concordance_td(S: np.ndarray, time, event) -> float:
    """Antolini's time-dependent concordance: over pairs where i churns in month T_i and j is known to stay
    past it, the share with ``S_i(T_i) < S_j(T_i)`` (ties count half)."""
    S = np.asarray(S, dtype=float)
    time, event = np.asarray(time).astype(int), np.asarray(event).astype(bool)
    conc = total = 0.0
    for t in np.unique(time[event]):
        if t < 1 or t > S.shape[1]:
            continue
        i = event & (time == t)
        j = (time > t) | ((time == t) & ~event)
        if not j.any():
            continue
        sj = np.sort(S[j, t - 1])
        si = S[i, t - 1]
        above = len(sj) - np.searchsorted(sj, si, side="right")
        ties = np.searchsorted(sj, si, side="right") - np.searchsorted(sj, si, side="left")
        conc += float(above.sum() + 0.5 * ties.sum())
        total += float(len(si) * len(sj))
    return conc / total if total else float("nan")


def survival_quality(curves: dict, time, event) -> pl.DataFrame:
    """Antolini's C^td and the IPCW integrated Brier score per model (`curves`: name -> S, shape (rows, H)), best Brier first."""
    rows = [{"model": k, "c_td": concordance_td(S, time, event), "integrated_brier": integrated_brier(S, time, event)}
            for k, S in curves.items()]
    return pl.DataFrame(rows).sort("integrated_brier", maintain_order=True)


def temporal_holdout(table: FeatureTable, horizon: int = 12) -> tuple[dt.date, pl.DataFrame]:
    """A test snapshot `horizon` months before the last one (its whole future observed) and its rows.

    Fit with ``fit_survival(table, horizon, until=test_date)``: no outcome after the test date is seen.
    """
    _check_monthly(table)
    dates = sorted(table.frame["snapshot_date"].unique().to_list())
    last = dates[-1]
    test = pl.select(pl.lit(last).dt.offset_by(f"-{horizon}mo")).item()
    if test not in dates or dates.index(test) < 3:
        raise ValueError(f"a {horizon}-month hold-out needs at least 3 monthly snapshots before {test}; "
                         f"the data has {len(dates)} from {dates[0]} to {last}: shorten the horizon")
    return test, table.frame.filter(pl.col("snapshot_date") == test)


# --- the simulator's truth ----------------------------------------------------------------------

def true_hazard_grid(world, customers: pl.Series | None = None) -> pl.DataFrame:
    """The simulator's true monthly hazard for every customer and simulated month (customer_id, month_start, churn_prob).

    `world.truth` stops at a customer's churn month; a survival curve from an earlier snapshot needs
    the months after it too (what the hazard would have been), so the blocks are replayed with the
    world's seed, config and policy (the same draws: rows shared with `world.truth` are identical).
    `customers`: replay only the blocks that hold these customer ids.
    """
    from trustml.simulator import CHUNK_SIZE, _Block, _blocks
    need = None if customers is None else set((customers.str.slice(1).cast(pl.Int64) - 1) // CHUNK_SIZE)
    parts = []
    for b, first, n in _blocks(world.customers.height):
        if need is not None and b not in need:
            continue
        block = _Block(first + 1, n, world.n_months, world.seed, b, world.config)
        grids, _ = block.play(world.policy, events=False)
        M = world.n_months
        parts.append(pl.DataFrame({"customer_id": block.ids.gather(np.repeat(np.arange(n), M)),
                                   "month_start": np.tile(block.months[:M].astype("datetime64[D]"), n),
                                   "churn_prob": grids["hazard"].ravel()}))
    if not parts:
        return pl.DataFrame(schema={"customer_id": pl.String, "month_start": pl.Date, "churn_prob": pl.Float64})
    return pl.concat(parts)


def true_survival(world, frame: pl.DataFrame, horizon: int = 12, *, grid: pl.DataFrame | None = None) -> np.ndarray:
    """True S(k) = prod_{j<=k} (1 - h_true(d + j - 1)) for each snapshot row (customer, d); NaN past the simulated months.

    The true hazards include each customer's future trust shocks (tickets, broken promises after d), so
    this curve knows more than anything observable at d: a bound for models, not a target they can reach.
    """
    grid = true_hazard_grid(world, frame["customer_id"].unique()) if grid is None else grid
    keys = frame.select("customer_id", "snapshot_date").with_row_index("_row")
    ks = pl.DataFrame({"_k": list(range(1, horizon + 1))}, schema={"_k": pl.Int64})
    long = (keys.join(ks, how="cross").with_columns(month_start=_offset(pl.col("_k") - 1))
            .join(grid, on=["customer_id", "month_start"], how="left").sort("_row", "_k"))
    h = long["churn_prob"].to_numpy().reshape(frame.height, horizon).astype(float)
    return np.cumprod(1 - h, axis=1)   # NaN (month not simulated) propagates to every later month


# --- plots --------------------------------------------------------------------------------------

def plot_curves(surv: SurvivalModel, frame: pl.DataFrame, *, id_column: str = "customer_id", truth: np.ndarray | None = None, ax=None):
    """Survival curves (months ahead vs probability still here) for a few customers, pseudonymised; dashed: `truth`."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    S = surv.survival(frame)
    k = np.arange(0, surv.horizon + 1)
    ids = pseudonymise(frame[id_column].to_list()) if id_column in frame.columns else [str(i) for i in range(frame.height)]
    for i, name in enumerate(ids):
        line, = ax.step(k, np.r_[1.0, S[i]], where="post", label=name)
        if truth is not None:
            ax.step(k, np.r_[1.0, truth[i]], where="post", ls="--", c=line.get_color(), alpha=0.7)
    ax.set(title="Probability of still being a customer" + (" (dashed: the simulator's truth)" if truth is not None else ""),
           xlabel="months ahead", ylabel="S(k)", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return ax


def plot_whatif_curve(surv: SurvivalModel, row: pl.DataFrame, settings: dict, *, id_column: str = "customer_id", ax=None):
    """One customer's survival curve before and after lever changes (`trustml.whatif.apply_levers`): the explorer's view, static."""
    import matplotlib.pyplot as plt

    from trustml.whatif import apply_levers, describe_settings
    if row.height != 1:
        raise ValueError(f"plot_whatif_curve takes one customer row, got {row.height}")
    after = apply_levers(row, settings, surv.registry)
    S = surv.survival(pl.concat([row, after], how="vertical_relaxed"))
    k = np.arange(0, surv.horizon + 1)
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    name = pseudonymise([row[id_column][0]])[0] if id_column in row.columns else "customer"
    ax.step(k, np.r_[1.0, S[0]], where="post", label=f"as is: {_expected(S[0]):.1f} expected months")
    ax.step(k, np.r_[1.0, S[1]], where="post", label=f"after: {_expected(S[1]):.1f} expected months")
    ax.fill_between(k, np.r_[1.0, S[0]], np.r_[1.0, S[1]], step="post", alpha=0.15)
    ax.set(title=f"{name}: {describe_settings(settings, row, surv.registry)}", xlabel="months ahead",
           ylabel="probability still a customer", ylim=(0, 1.02))
    ax.title.set_fontsize(8)
    ax.legend(fontsize=8)
    return ax


def _expected(S: np.ndarray) -> float:
    return float(((np.r_[1.0, S[:-1]] + S) / 2).sum())


def plot_pillar_survival(attr: pl.DataFrame, customer: str, ax=None):
    """Bar chart: how each pillar moves one customer's probability of still being here, per horizon (points)."""
    import matplotlib.pyplot as plt
    d = attr.filter(pl.col("customer") == customer)
    months = d["months"].unique().sort().to_list()
    labels = d.filter(pl.col("months") == months[0])["label"].to_list()
    ax = ax or plt.subplots(figsize=(7, 3.6))[1]
    w = 0.8 / len(months)
    y = np.arange(len(labels))
    for i, m in enumerate(months):
        ax.barh(y + i * w, d.filter(pl.col("months") == m)["points"].to_numpy(), height=w, label=f"{m} months")
    ax.set_yticks(y + w * (len(months) - 1) / 2, labels, fontsize=8)
    ax.axvline(0, c="black", lw=0.5)
    ax.set(title=f"{customer}: points of 'still here' each pillar adds (+) or takes (-)", xlabel="percentage points")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return ax
