"""Month after month: score new data with a saved model, check drift and fairness.

Each month the retention team scores the new snapshot and asks whether the model still holds:

* `features_for` rebuilds the features of new data the way training built them (a simulated
  world's folder, or a file read through the same mapping) and `check_contract` refuses data
  whose feature definitions differ from the model's, in one message naming what differs;
  `score` writes risk, top reasons and the best action per customer (pseudonymised ids).
* `Reference` keeps, from the rows the model was checked on, the quantile bins of every feature
  and of the predicted risk, the churn rate and the AUC (JSON beside the model, no pickle);
  `drift` compares new rows with it: PSI per feature, per pillar and of the predicted risk, and
  once labels arrive the realised churn rate and AUC, each flagged 'ok', 'warn' or 'alarm'
  against `Thresholds` the user can set.
* `fairness` gives, per group of each sensitive column or segment, the campaign's selection rate,
  error rates and calibration (Fairlearn's `MetricFrame`); `proxies` measures how well the model's
  features predict a sensitive column, all together and one by one.

Sensitive columns are not in the feature table (the mapping leaves them out); pass them from the
raw data, keyed by customer id (see `groups_of`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = np.histogram(rng.normal(size=5000), bins=[-9, -1, 0, 1, 9])[0] / 5000
>>> same = np.histogram(rng.normal(size=5000), bins=[-9, -1, 0, 1, 9])[0] / 5000
>>> moved = np.histogram(rng.normal(0.5, size=5000), bins=[-9, -1, 0, 1, 9])[0] / 5000
>>> psi(ref, same) < 0.01 < 0.1 < psi(ref, moved)
True
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from trustml.contract import ContractError, Problem
from trustml.features import FeatureTable, Snapshots, build_features
from trustml.model import ModelMismatchError, TemporalSplit, TrainedModel, _horizon_in_snapshots, temporal_split
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise

__all__ = ["Thresholds", "Reference", "DriftReport", "psi", "drift", "check_contract", "features_for", "score",
           "NextMonth", "next_month", "history_split", "OWN_WORLD_CUSTOMERS", "groups_of", "fairness", "Fairness", "proxies", "Proxies", "plot_drift", "REFERENCE_FILE"]

REFERENCE_FILE = "reference.json"
_EPS = 1e-4           # share given to an empty bin, so PSI stays finite
_DEFINITION = ("pillar", "categorical", "unit", "direction", "actionable")   # what must match between model and data
_ORDER = {"ok": 0, "warn": 1, "alarm": 2, "n/a": -1}


# --- thresholds and PSI -------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """When drift is worth a look ('warn') or a retrain ('alarm').

    PSI: the usual rule of thumb, < 0.1 stable, 0.1-0.25 moved, > 0.25 shifted. AUC: a drop
    below the reference AUC larger than `auc_drop_*` *and* than twice its standard error (a
    month has few churners). Churn rate: a relative change larger than `churn_change_*` *and*
    two binomial standard errors away from the reference rate.
    """

    psi_warn: float = 0.1
    psi_alarm: float = 0.25
    auc_drop_warn: float = 0.03
    auc_drop_alarm: float = 0.07
    churn_change_warn: float = 0.25
    churn_change_alarm: float = 0.5

    def __post_init__(self):
        for a, b in (("psi_warn", "psi_alarm"), ("auc_drop_warn", "auc_drop_alarm"), ("churn_change_warn", "churn_change_alarm")):
            if not 0 <= getattr(self, a) <= getattr(self, b):
                raise ValueError(f"Thresholds: need 0 <= {a} <= {b}, got {getattr(self, a)} and {getattr(self, b)}")

    def psi_status(self, value: float) -> str:
        return "alarm" if value >= self.psi_alarm else "warn" if value >= self.psi_warn else "ok"


def psi(expected, actual) -> float:
    """Population stability index between two vectors of bin shares: sum (a - e) ln(a / e).

    Empty bins get a share of 1e-4 so a bin that appears or empties counts, but finitely.
    """
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_bins(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value: below the first edge, at it, between it and the next, ... and a last bin for missing.

    Each quantile edge is a bin of its own, so a point mass (zero broken promises for most
    customers) is one bin and the values above it are others, however skewed the feature is.
    """
    k = len(edges)
    idx = np.full(x.shape, 2 * k + 1, dtype=np.int64)
    ok = ~np.isnan(x)
    i = np.searchsorted(edges, x[ok], side="left")
    exact = (i < k) & (edges[np.minimum(i, max(k - 1, 0))] == x[ok]) if k else np.zeros(i.shape, dtype=bool)
    idx[ok] = 2 * i + exact
    return idx


def _shares(idx: np.ndarray, n_bins: int) -> np.ndarray:
    return np.bincount(idx, minlength=n_bins)[:n_bins] / max(len(idx), 1)


def _as_float(s: pl.Series) -> np.ndarray:
    return s.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)


@dataclass
class _Profile:
    """One distribution's reference: numeric quantile edges or categories, and the shares in each bin."""

    kind: str                       # 'numeric' | 'categorical'
    edges: list = field(default_factory=list)        # numeric: quantile edges
    categories: list = field(default_factory=list)   # categorical: values seen (then 'unseen', then missing)
    shares: list = field(default_factory=list)

    @classmethod
    def fit(cls, s: pl.Series, categorical: bool, bins: int) -> _Profile:
        if categorical:
            cats = sorted(s.cast(pl.String).drop_nulls().unique().to_list())
            p = cls("categorical", categories=cats)
        else:
            x = _as_float(s)
            x = x[~np.isnan(x)]
            values = np.unique(x)
            # few distinct values (counts): each value its own bin; else quantile edges (each also a bin of its own)
            edges = values if values.size <= bins else np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
            p = cls("numeric", edges=[float(e) for e in edges])
        p.shares = p.bin_shares(s).tolist()
        return p

    @property
    def n_bins(self) -> int:
        return 2 * len(self.edges) + 2 if self.kind == "numeric" else len(self.categories) + 2

    def bin_index(self, s: pl.Series) -> np.ndarray:
        if self.kind == "numeric":
            return _numeric_bins(_as_float(s), np.asarray(self.edges, dtype=float))
        v = s.cast(pl.String)
        code = v.replace_strict(self.categories, list(range(len(self.categories))), default=len(self.categories), return_dtype=pl.Int64)
        return code.fill_null(len(self.categories) + 1).to_numpy()  # unseen -> len, missing -> len + 1

    def bin_shares(self, s: pl.Series) -> np.ndarray:
        return _shares(self.bin_index(s), self.n_bins)

    def unseen_share(self, s: pl.Series) -> float:
        return float(self.bin_shares(s)[len(self.categories)]) if self.kind == "categorical" else 0.0


# --- the reference ------------------------------------------------------------------------------

@dataclass
class Reference:
    """What 'normal' looked like when the model was checked: bins and shares per feature and of the risk.

    Build it with `Reference.fit` from the rows the model was last checked on (e.g. the latest
    snapshot before training ended: a world that grows and ages moves pooled history far from
    any one month), save it beside the model with `save` (JSON).
    """

    features: dict[str, _Profile]
    pillars: dict[str, str]
    risk: _Profile
    rows: int
    churn_rate: float | None = None
    auc: float | None = None
    mean_risk: float | None = None
    note: str = ""

    @classmethod
    def fit(cls, trained: TrainedModel, frame: pl.DataFrame, *, labelled: pl.DataFrame | None = None, card: dict | None = None,
            bins: int = 10) -> Reference:
        """Profile `frame` (feature rows); performance baseline from `card` (a model card) or `labelled` rows.

        `card`: the model card's test AUC and base rate (`Study.model_card()`); else `labelled`
        rows with `churned` (e.g. the test split), else the labelled rows of `frame` itself.

        Examples
        --------
        >>> from trustml.simulator import simulate
        >>> from trustml.model import train
        >>> w = simulate(800, 12, seed=2); table = build_features(w.customers, w.events, Snapshots())
        >>> trained, split = train(table, trials=0, n_estimators=40, early_stopping=False)
        >>> test = split.frames(table.labelled())[2]
        >>> ref = Reference.fit(trained, table.latest(), labelled=test)
        >>> ref.rows == table.latest().height and 0.5 < ref.auc < 1
        True
        """
        trained._check(frame)
        reg = trained.registry
        feats = {f.name: _Profile.fit(frame[f.name], f.categorical, bins) for f in reg}
        risk = trained.predict_risk(frame)
        rp = _Profile.fit(pl.Series(risk), False, bins)
        churn, auc, note = None, None, ""
        if card is not None:
            row = next((m for m in card.get("metrics", []) if str(m.get("model", "")).startswith("lightgbm")), None)
            if row:
                churn, auc, note = row.get("base_rate"), row.get("roc_auc"), "churn rate and AUC: the model card's test metrics"
        if auc is None:
            lab = labelled if labelled is not None else frame
            lab = lab.filter(pl.col("churned").is_not_null()) if "churned" in lab.columns else lab.head(0)
            if lab.height and lab["churned"].n_unique() == 2:
                y = lab["churned"].to_numpy()
                churn, auc = float(y.mean()), float(roc_auc_score(y, trained.predict_risk(lab)))
                note = f"churn rate and AUC: {lab.height:,} labelled reference rows"
            else:
                note = "no labelled reference rows: realised churn and AUC are not compared"
        return cls(feats, {f.name: f.pillar for f in reg}, rp, frame.height, churn, auc, float(np.mean(risk)), note)

    def to_dict(self) -> dict:
        prof = lambda p: {"kind": p.kind, "edges": p.edges, "categories": p.categories, "shares": p.shares}  # noqa: E731
        return {"format": "trustml.monitor.Reference/1", "rows": self.rows, "churn_rate": self.churn_rate, "auc": self.auc,
                "mean_risk": self.mean_risk, "note": self.note, "pillars": self.pillars,
                "risk": prof(self.risk), "features": {k: prof(v) for k, v in self.features.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        prof = lambda p: _Profile(p["kind"], p["edges"], p["categories"], p["shares"])  # noqa: E731
        return cls({k: prof(v) for k, v in d["features"].items()}, d["pillars"], prof(d["risk"]), d["rows"],
                   d.get("churn_rate"), d.get("auc"), d.get("mean_risk"), d.get("note", ""))

    def save(self, model_dir: str | Path) -> Path:
        """Write `reference.json` into a saved model's folder (read back by `Reference.load` and `trustml score`)."""
        path = Path(model_dir) / REFERENCE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> Reference:
        path = Path(model_dir) / REFERENCE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no drift reference beside this model (write one with Reference.fit(...).save(model_dir))")
        return cls.from_dict(json.loads(path.read_text()))


# --- drift --------------------------------------------------------------------------------------

@dataclass
class DriftReport:
    """PSI per feature and pillar, risk-distribution PSI, realised performance; each with a status."""

    features: pl.DataFrame     # feature, pillar, label, psi, unseen_share, status
    pillars: pl.DataFrame      # pillar, label, psi, top_feature, features_warn, features, status
    risk: dict                 # psi, mean_reference, mean_new, status
    performance: pl.DataFrame  # metric, reference, realised, change, status (empty until labels arrive)
    thresholds: Thresholds
    pillar_agg: str
    rows: int

    @property
    def status(self) -> str:
        """The worst status of any pillar, the risk distribution or performance."""
        states = self.pillars["status"].to_list() + [self.risk["status"]] + self.performance["status"].to_list()
        return max(states, key=lambda s: _ORDER[s])

    @property
    def alarms(self) -> list[str]:
        """What is in 'alarm', one line each."""
        out = [f"pillar {r['label']}: PSI {r['psi']:.3f} (most moved: {r['top_feature']})"
               for r in self.pillars.filter(pl.col("status") == "alarm").iter_rows(named=True)]
        if self.risk["status"] == "alarm":
            out.append(f"predicted risk distribution: PSI {self.risk['psi']:.3f}")
        out += [f"{r['metric']}: {r['reference']:.3f} -> {r['realised']:.3f}"
                for r in self.performance.filter(pl.col("status") == "alarm").iter_rows(named=True)]
        return out

    def summary(self) -> str:
        t = self.thresholds
        lines = [f"Drift on {self.rows:,} rows: {self.status.upper()} (PSI warn {t.psi_warn:g}, alarm {t.psi_alarm:g}; "
                 f"pillar PSI = {self.pillar_agg} of its features' PSI)"]
        for r in self.pillars.filter(pl.col("status") != "ok").iter_rows(named=True):
            lines.append(f"  {r['status']:5s} {r['label']}: PSI {r['psi']:.3f}, most moved {r['top_feature']} "
                         f"({r['features_warn']} of {r['features']} features over {t.psi_warn:g})")
        lines.append(f"  {self.risk['status']:5s} predicted risk: PSI {self.risk['psi']:.3f}, mean "
                     f"{self.risk['mean_reference']:.3f} -> {self.risk['mean_new']:.3f}")
        for r in self.performance.iter_rows(named=True):
            lines.append(f"  {r['status']:5s} {r['metric']}: reference {r['reference']:.3f}, realised {r['realised']:.3f} ({r['note']})")
        if self.performance.is_empty():
            lines.append("  n/a   realised churn and AUC: no labels yet (or no labelled reference)")
        return "\n".join(lines)

    def plot(self, ax=None):
        return plot_drift(self, ax=ax)


def drift(reference: Reference, frame: pl.DataFrame, trained: TrainedModel, *, thresholds: Thresholds | None = None,
          pillar_agg: str = "max") -> DriftReport:
    """Compare new feature rows with the reference: PSI per feature, per pillar, of the risk; performance if labelled.

    pillar_agg: how a pillar's PSI is built from its features' PSI: 'max' (default: a pillar
    moved if any of its signals moved; does not grow with the number of features, so pillars with
    many features are not flagged for noise alone), 'mean' or 'sum' (grows with the pillar's
    size; use higher thresholds). Realised churn rate and AUC are compared when `frame` has
    labelled rows (`churned` not null) with both classes and the reference has a baseline.

    Examples
    --------
    >>> from trustml.simulator import simulate
    >>> from trustml.model import train
    >>> w = simulate(800, 12, seed=2); table = build_features(w.customers, w.events, Snapshots())
    >>> trained, split = train(table, trials=0, n_estimators=40, early_stopping=False)
    >>> test = split.frames(table.labelled())[2]
    >>> ref = Reference.fit(trained, test)
    >>> report = drift(ref, test, trained)
    >>> report.status, float(report.pillars["psi"].max())
    ('ok', 0.0)
    """
    t = thresholds or Thresholds()
    if pillar_agg not in ("max", "mean", "sum"):
        raise ValueError(f"pillar_agg must be 'max', 'mean' or 'sum', got {pillar_agg!r}")
    trained._check(frame)
    missing = [n for n in trained.registry.names if n not in reference.features]
    if missing:
        raise ModelMismatchError(f"the drift reference was made for another model: it lacks {missing[:5]}")
    rows = []
    for f in trained.registry:
        prof = reference.features[f.name]
        v = psi(prof.shares, prof.bin_shares(frame[f.name]))
        rows.append({"feature": f.name, "pillar": f.pillar, "label": PILLARS[f.pillar].label, "psi": v,
                     "unseen_share": prof.unseen_share(frame[f.name]), "status": t.psi_status(v)})
    feats = pl.DataFrame(rows, schema_overrides={"psi": pl.Float64, "unseen_share": pl.Float64})
    agg = {"max": pl.col("psi").max(), "mean": pl.col("psi").mean(), "sum": pl.col("psi").sum()}[pillar_agg]
    pillars = (feats.group_by("pillar", "label", maintain_order=True)
               .agg(agg.alias("psi"), pl.col("feature").sort_by("psi", descending=True).first().alias("top_feature"),
                    (pl.col("psi") >= t.psi_warn).sum().cast(pl.Int64).alias("features_warn"), pl.len().cast(pl.Int64).alias("features"))
               .with_columns(status=pl.col("psi").map_elements(t.psi_status, return_dtype=pl.String)))
    order = {p: i for i, p in enumerate(PILLARS)}
    pillars = pillars.sort(pl.col("pillar").replace_strict(order, return_dtype=pl.Int64))
    risk = trained.predict_risk(frame)
    rv = psi(reference.risk.shares, reference.risk.bin_shares(pl.Series(risk)))
    risk_info = {"psi": rv, "mean_reference": reference.mean_risk, "mean_new": float(np.mean(risk)) if len(risk) else float("nan"),
                 "status": t.psi_status(rv)}
    return DriftReport(feats, pillars, risk_info, _performance(reference, frame, risk, t), t, pillar_agg, frame.height)


def _auc_se(auc: float, n1: int, n0: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC with n1 positives and n0 negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    return float(np.sqrt(max(auc * (1 - auc) + (n1 - 1) * (q1 - auc ** 2) + (n0 - 1) * (q2 - auc ** 2), 0) / (n1 * n0)))


def _performance(reference: Reference, frame: pl.DataFrame, risk: np.ndarray, t: Thresholds) -> pl.DataFrame:
    schema = {"metric": pl.String, "reference": pl.Float64, "realised": pl.Float64, "change": pl.Float64, "status": pl.String, "note": pl.String}
    if "churned" not in frame.columns or reference.churn_rate is None:
        return pl.DataFrame(schema=schema)
    mask = frame["churned"].is_not_null().to_numpy()
    y = frame["churned"].to_numpy()[mask].astype(int)
    if y.size == 0 or len(np.unique(y)) < 2:
        return pl.DataFrame(schema=schema)
    rows = []
    rate, ref_rate = float(y.mean()), float(reference.churn_rate)
    rel = rate / ref_rate - 1 if ref_rate > 0 else float("inf")
    z = abs(rate - ref_rate) / np.sqrt(max(ref_rate * (1 - ref_rate), 1e-12) / y.size)
    status = ("alarm" if abs(rel) >= t.churn_change_alarm else "warn" if abs(rel) >= t.churn_change_warn else "ok") if z >= 2 else "ok"
    rows.append({"metric": "churn rate", "reference": ref_rate, "realised": rate, "change": rel, "status": status,
                 "note": f"{int(y.sum()):,} churners in {y.size:,}; model predicted {float(np.mean(risk[mask])):.3f}; z = {z:.1f}"})
    if reference.auc is not None:
        auc = float(roc_auc_score(y, risk[mask]))
        drop = float(reference.auc) - auc
        se = _auc_se(auc, int(y.sum()), int((1 - y).sum()))
        status = ("alarm" if drop >= t.auc_drop_alarm else "warn" if drop >= t.auc_drop_warn else "ok") if drop >= 2 * se else "ok"
        rows.append({"metric": "roc_auc", "reference": float(reference.auc), "realised": auc, "change": -drop, "status": status,
                     "note": f"standard error {se:.3f}"})
    return pl.DataFrame(rows, schema=schema)


def plot_drift(report: DriftReport, ax=None):
    """Horizontal bars of PSI per pillar, coloured by status, with the warn and alarm lines."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(7, 3.4))[1]
    colors = {"ok": "#4c72b0", "warn": "#dd8452", "alarm": "#c44e52"}
    p = report.pillars
    ax.barh(p["label"].to_list(), p["psi"].to_list(), color=[colors[s] for s in p["status"]])
    ax.invert_yaxis()
    for x, style in ((report.thresholds.psi_warn, ":"), (report.thresholds.psi_alarm, "--")):
        ax.axvline(x, color="grey", ls=style, lw=1)
    ax.set(title=f"Drift by trust pillar ({report.pillar_agg} PSI of its features; risk PSI {report.risk['psi']:.3f})",
           xlabel="PSI vs the reference (dotted: warn, dashed: alarm)")
    return ax


# --- new data through the model's feature definitions -------------------------------------------

def check_contract(trained: TrainedModel, table: FeatureTable) -> list[str]:
    """Refuse new data whose features differ from the model's; return notes on what merely moved.

    Raises `ModelMismatchError` naming every feature that is missing (with why the new data
    could not build it), unexpected, or defined differently (pillar, type, unit, direction,
    actionable). Returns notes, e.g. category values the model never saw (scored as missing).
    """
    model_reg, new_reg = trained.registry, table.registry
    new_names = set(new_reg.names)
    missing = [n for n in model_reg.names if n not in new_names]
    extra = [n for n in new_reg.names if n not in set(model_reg.names)]
    changed = []
    for f in model_reg:
        if f.name in new_names:
            g = new_reg[f.name]
            diffs = [f"{k} {getattr(f, k)!r} -> {getattr(g, k)!r}" for k in _DEFINITION if getattr(f, k) != getattr(g, k)]
            if diffs:
                changed.append(f"{f.name} ({', '.join(diffs)})")
    if missing or extra or changed:
        def some(items, sep=", "):
            return sep.join(items[:8]) + (f"{sep}... ({len(items) - 8} more)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: " + some([f"{n} ({table.dropped[n]})" if n in table.dropped else n for n in missing]))
        if extra:
            parts.append(f"not in training {len(extra)}: " + some(extra))
        if changed:
            parts.append(f"defined differently {len(changed)}: " + some(changed, "; "))
        raise ModelMismatchError("the new data's features differ from the model's (same data source and mapping as training?): "
                                 + " | ".join(parts))
    notes = []
    cats = trained.model.categories_
    for name in model_reg.categorical:
        seen = set(cats.get(name, []))
        new = sorted(set(table.frame[name].cast(pl.String).drop_nulls().unique().to_list()) - seen)
        if new:
            notes.append(f"{name}: values never seen in training, scored as missing: {new[:5]}")
    return notes


def features_for(data, mapping=None, *, snapshot: dt.date | None = None) -> FeatureTable:
    """New data's feature table, built the way training built it; only the latest (or `snapshot`) rows are kept.

    `data`: a folder written by `trustml simulate` (the default feature spec, snapshot at the
    world's as-of date), or a file read through `mapping` (the same mapping as training). A flat
    file for a new month may lack the churn column (not known yet): its rows are scored unlabelled.
    """
    from trustml.mapping import event_tables, flat_table, load_mapping, read_data
    if mapping is None:
        from trustml.simulator import read_world
        path = Path(data)
        customers, events = read_world(path)
        meta = json.loads((path / "world.json").read_text()) if (path / "world.json").exists() else {}
        as_of = dt.datetime.fromisoformat(meta["as_of"]) if "as_of" in meta else None
        d = snapshot or (as_of.date() if as_of else None)
        table = build_features(customers, events, Snapshots(start=d, end=d) if d else Snapshots(), as_of=as_of)
    else:
        m = load_mapping(mapping) if not hasattr(mapping, "kind") else mapping
        df = read_data(data, m)
        if m.kind == "flat":
            unlabelled = m.target not in df.columns
            if unlabelled:  # both labels, so the label check passes; the rows are unlabelled below
                neg = m.negative[0] if m.negative else "__not_churned__"
                df = df.with_columns(pl.Series(m.target, [m.positive[0], neg] * (df.height // 2) + [neg] * (df.height % 2)))
            table = flat_table(df, m, source=str(data))
            if unlabelled:
                table.frame = table.frame.with_columns(churned=pl.lit(None, dtype=pl.Int8))
            return table
        subs, subs_path = None, None
        if m.subscriptions:
            subs_path = next((p for p in (Path(m.origin).parent / m.subscriptions["file"], Path(data).parent / m.subscriptions["file"])
                              if p.exists()), Path(m.subscriptions["file"]))
            subs = read_data(subs_path)
        customers, events, spec, snaps, as_of = event_tables(df, m, source=str(data), subscriptions=subs, subscriptions_source=str(subs_path))
        table = build_features(customers, events, snaps, spec, as_of=as_of)
    keep = snapshot or table.frame["snapshot_date"].max()
    table.frame = table.frame.filter(pl.col("snapshot_date") == keep)
    if table.frame.is_empty():
        raise ContractError([Problem(Path(str(data)).name, None, f"no customers active at snapshot {keep}")])
    return table


def score(trained: TrainedModel, frame: pl.DataFrame, *, value=None, reasons: int = 3, actions_top: int | None = 100,
          costs: dict | None = None, real_ids: bool = False, id_column: str = "customer_id") -> pl.DataFrame:
    """Risk, top reasons and the best action per customer, riskiest first.

    Every customer gets a risk and up to `reasons` plain-language reasons; the `actions_top`
    riskiest (None: all; each needs a search over lever settings) get the action of highest
    expected value (`trustml.whatif.campaign`), the rest 'not searched (below the top N)'.
    Ids are pseudonymised; with `real_ids=True` the first column is `real_customer_id`.

    Examples
    --------
    >>> from trustml.simulator import simulate
    >>> from trustml.model import train
    >>> w = simulate(800, 12, seed=2); table = build_features(w.customers, w.events, Snapshots())
    >>> trained, split = train(table, trials=0, n_estimators=40, early_stopping=False)
    >>> out = score(trained, table.latest().head(40), actions_top=3)
    >>> out.columns[:4], out["customer"].str.starts_with("cust-").all()
    (['customer', 'snapshot_date', 'rank', 'risk'], True)
    """
    from trustml.explanations import explain, reason_codes
    from trustml.whatif import campaign
    if frame[id_column].n_unique() < frame.height:
        raise ValueError(f"score: {id_column} repeats; pass one snapshot (one row per customer)")
    ids = frame[id_column].cast(pl.String).to_list()
    pseud = pseudonymise(ids)
    risk = trained.predict_risk(frame)
    value = np.broadcast_to(np.asarray(100.0 if value is None else value, dtype=float), (frame.height,))
    out = pl.DataFrame({"customer": pseud, "snapshot_date": frame["snapshot_date"] if "snapshot_date" in frame.columns else None,
                        "risk": risk, "customer_value": value})
    codes = reason_codes(trained, frame, explain(trained, frame), top=reasons, id_column=id_column)
    if codes.height:
        wide = codes.pivot(on="rank", index="customer", values="reason", aggregate_function="first")
        wide = wide.rename({c: f"reason_{c}" for c in wide.columns if c != "customer"})
        out = out.join(wide, on="customer", how="left")
    for k in range(1, reasons + 1):
        if f"reason_{k}" not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.String).alias(f"reason_{k}"))
    n = frame.height if actions_top is None else min(actions_top, frame.height)
    plan = campaign(trained, frame, value, top_n=n, costs=costs, id_column=id_column) if n else None
    if plan is not None and plan.height:
        out = out.join(plan.select("customer", pl.col("action").alias("best_action"), pl.col("pillars").alias("action_pillars"),
                                   "risk_after", "expected_value"), on="customer", how="left")
    else:
        out = out.with_columns(best_action=pl.lit(None, dtype=pl.String), action_pillars=pl.lit(None, dtype=pl.String),
                               risk_after=pl.lit(None, dtype=pl.Float64), expected_value=pl.lit(None, dtype=pl.Float64))
    out = (out.with_columns(pl.col("best_action").fill_null(f"not searched (below the top {n})"))
           .sort("risk", descending=True, maintain_order=True).with_row_index("rank", offset=1)
           .select("customer", "snapshot_date", "rank", "risk", *[f"reason_{k}" for k in range(1, reasons + 1)],
                   "best_action", "action_pillars", "risk_after", "expected_value", "customer_value"))
    if real_ids:
        back = dict(zip(pseud, ids, strict=True))
        out = out.with_columns(pl.col("customer").replace_strict(back, return_dtype=pl.String)).rename({"customer": "real_customer_id"})
    return out


# --- the simulator: train on earlier months, score a later one ----------------------------------

# `next_month` is an experiment in a world of its own, sized for the drift check, not for the study it sits in: 10,000
# customers put about 6,500 in the scored month (24 months), so PSI's sampling noise (about 0.003) stays far below the 0.1 warning
# and the realised AUC's standard error near 0.02; a larger world only makes the notebook slower.
OWN_WORLD_CUSTOMERS = 10_000


def history_split(table: FeatureTable) -> tuple[TemporalSplit, str]:
    """A temporal split that fits the history, and a sentence saying what it is.

    Test and calibration take at most half the labelled snapshot dates (after the gap a label horizon
    needs), so training keeps at least half: `temporal_split`'s default (test 3, calibrate 2) from 10
    labelled monthly dates, fewer (2 and 2, 2 and 1, down to 1 and 1) in a shorter history, as a 12-month
    world cut six months before its end has (5). Fewer than 4 labelled dates: a ValueError.

    Examples
    --------
    >>> nm = next_month(600, 12, seed=1, train_months=-6, score_month=-3)
    >>> split, note = history_split(nm.history)
    >>> len(split.train), len(split.calibrate), len(split.test)
    (3, 1, 1)
    """
    n = table.labelled()["snapshot_date"].n_unique()
    gap = _horizon_in_snapshots(table)
    budget = (n - 2 * gap) // 2
    fits = [(t, c) for t, c in ((3, 2), (2, 2), (2, 1), (1, 1)) if t + c <= budget]
    if not fits:
        raise ValueError(f"the history has {n} labelled snapshot dates; training, calibration and test need at least {4 + 2 * gap}: "
                         "train on more months (a later train_months, or a longer world)")
    test, cal = fits[0]
    split = temporal_split(table, test_snapshots=test, calibration_snapshots=cal, gap_snapshots=gap)
    short = "" if (test, cal) == (3, 2) else " (a short history: test and calibration take at most half of it)"
    note = (f"split of {n} labelled months: train on {len(split.train)}, calibrate on {cal}, test on {test}"
            + (f", {gap} apart" if gap else "") + short)
    return split, note


@dataclass
class NextMonth:
    """A simulated world cut in two: `history` (events before the cut: train on it) and `new` (a later month's snapshot).

    `split`: the temporal split to train on `history` with (`history_split`: it fits a short history), `split_note` what it is.
    """

    world: object
    history: FeatureTable
    new: FeatureTable
    cut: dt.date
    month: dt.date

    @cached_property
    def _split(self) -> tuple[TemporalSplit, str]:
        return history_split(self.history)

    @property
    def split(self) -> TemporalSplit:
        """The temporal split to train on `history` with (`history_split`)."""
        return self._split[0]

    @property
    def split_note(self) -> str:
        """What `split` is, in a sentence."""
        return self._split[1]

    @property
    def reference_rows(self) -> pl.DataFrame:
        """The latest snapshot before the cut: the population the model last saw."""
        return self.history.latest()


def next_month(n_customers: int = 3000, n_months: int = 24, seed: int = 0, *, train_months: int = 18, score_month: int = 21,
               config=None, changes: tuple = (), max_customers: int | None = None) -> NextMonth:
    """Simulate, keep what was known before month `train_months` for training, and build month `score_month`'s snapshot.

    The new snapshot's labels are known when its label window ends within the world (score_month
    < n_months); its features use all events before it. A negative month counts from the end of the world
    (-6: six months before it), so the same settings fit any length. `changes`: policy changes
    ``(month, SimConfig field, value)`` from that month on (negative months likewise), e.g.
    ``((-6, 'price_rise_unannounced_share', 0.9),)`` for more unannounced price rises from the cut; or pass a
    whole `config` (a `SimConfig`). `max_customers`: simulate at most this many customers (`OWN_WORLD_CUSTOMERS`
    sizes the world for the experiment, not the study). `NextMonth.split` fits the history's length (`history_split`).

    Examples
    --------
    >>> nm = next_month(800, 14, seed=1, train_months=10, score_month=12)
    >>> str(nm.cut), str(nm.month), nm.history.frame["snapshot_date"].max() == nm.cut
    ('2024-11-01', '2025-01-01', True)
    >>> str(next_month(800, 14, seed=1, train_months=-4, score_month=-2).cut)
    '2024-11-01'
    """
    from dataclasses import replace

    from trustml.simulator import SimConfig, _month_starts, simulate
    at = lambda m: n_months + m if m < 0 else m  # noqa: E731
    train_months, score_month = at(train_months), at(score_month)
    if not 3 <= train_months <= score_month < n_months + 1:
        raise ValueError(f"need 3 <= train_months <= score_month <= n_months, got {train_months}, {score_month}, {n_months}")
    if changes:
        config = replace(config or SimConfig(), changes=tuple((at(m), f, v) for m, f, v in changes))
    config = config or SimConfig()
    if max_customers is not None:
        n_customers = min(n_customers, max_customers)
    world = simulate(n_customers, n_months, seed, config=config)
    starts = _month_starts(config.start, n_months + 1)
    cut, month = starts[train_months].astype(dt.datetime), starts[score_month].astype(dt.datetime)
    history = build_features(world.customers.filter(pl.col("signup_date") < cut.date()), world.events.filter(pl.col("timestamp") < cut),
                             Snapshots(), as_of=cut)
    new = build_features(world.customers, world.events, Snapshots(start=month.date(), end=month.date()), as_of=world.as_of)
    return NextMonth(world, history, new, cut.date(), month.date())


# --- fairness -----------------------------------------------------------------------------------

def groups_of(df: pl.DataFrame, mapping=None, *, columns=(), id_column: str | None = None) -> pl.DataFrame:
    """Group columns from raw data, keyed by `customer_id`: the mapping's sensitive columns plus `columns` (segments).

    Sensitive columns never reach the feature table; this takes them from the input file.
    """
    idc = id_column or (mapping.id if mapping is not None else "customer_id")
    wanted = list(dict.fromkeys([*(mapping.sensitive if mapping is not None else ()), *columns]))
    missing = [c for c in [idc, *wanted] if c not in df.columns]
    if missing:
        raise ContractError([Problem("data", c, "group column not in the data") for c in missing])
    if not wanted:
        raise ValueError("groups_of: no sensitive columns in the mapping and no segment columns named")
    return df.select(pl.col(idc).cast(pl.String).alias("customer_id"), *[pl.col(c).cast(pl.String) for c in wanted])


def _aligned(frame: pl.DataFrame, groups: pl.DataFrame, id_column: str) -> pl.DataFrame:
    if "customer_id" not in groups.columns:
        raise ContractError([Problem("groups", "customer_id", "group table needs a customer_id column (see groups_of)")])
    g = groups.with_columns(pl.col("customer_id").cast(pl.String)).unique("customer_id", keep="first")
    out = frame.select(pl.col(id_column).cast(pl.String).alias("customer_id")).join(g, on="customer_id", how="left", maintain_order="left")
    cols = [c for c in g.columns if c != "customer_id"]
    lost = out.filter(pl.all_horizontal(pl.col(c).is_null() for c in cols)).height if cols else 0
    if lost == out.height:
        raise ContractError([Problem("groups", "customer_id", "no customer of the scored rows is in the group table")])
    return out


@dataclass
class Fairness:
    """Per group: selection rate, error rates, calibration; per column: the largest gaps."""

    groups: pl.DataFrame   # column, group, customers, selected, selection_rate, churn_rate, mean_risk, calibration_ratio, fpr, fnr
    gaps: pl.DataFrame     # column, selection_rate_ratio, selection_rate_difference, fpr_difference, fnr_difference, calibration_gap
    selection: str

    def summary(self) -> str:
        lines = [f"Fairness of the campaign ({self.selection}):"]
        for r in self.gaps.iter_rows(named=True):
            flag = " (below the four-fifths rule of thumb)" if r["selection_rate_ratio"] is not None and r["selection_rate_ratio"] < 0.8 else ""
            lines.append(f"  {r['column']}: selection-rate ratio {r['selection_rate_ratio']:.2f}{flag}"
                         + (f", FNR gap {r['fnr_difference']:.2f}, calibration gap {r['calibration_gap']:.2f}"
                            if r["fnr_difference"] is not None else ""))
        return "\n".join(lines)


def fairness(trained: TrainedModel, frame: pl.DataFrame, groups: pl.DataFrame, *, selected=None, top_share: float = 0.1,
             id_column: str = "customer_id") -> Fairness:
    """Per group of each column of `groups`: who the campaign selects, error rates, calibration (Fairlearn `MetricFrame`).

    `groups`: `customer_id` plus one column per sensitive attribute or segment, from the raw data
    (`groups_of`); rows join by id. `selected`: a boolean mask over `frame` (e.g. the playbook's
    customers), default the riskiest `top_share`. With labels (`churned`), error rates treat
    'selected' as 'predicted to churn': FPR = stayers selected, FNR = churners missed;
    calibration_ratio = observed churn / mean predicted risk (1 = calibrated for the group).

    Examples
    --------
    >>> from trustml.simulator import simulate
    >>> from trustml.model import train
    >>> w = simulate(800, 12, seed=2); table = build_features(w.customers, w.events, Snapshots())
    >>> trained, split = train(table, trials=0, n_estimators=40, early_stopping=False)
    >>> test = split.frames(table.labelled())[2]
    >>> fair = fairness(trained, test, groups_of(w.customers, columns=["channel"]))
    >>> sorted(fair.groups["group"].to_list())
    ['organic', 'paid', 'referral']
    """
    from fairlearn.metrics import MetricFrame
    risk = trained.predict_risk(frame)
    if selected is None:
        k = max(1, int(round(top_share * frame.height)))
        sel = np.zeros(frame.height, dtype=bool)
        sel[np.argsort(-risk, kind="stable")[:k]] = True
        how = f"the riskiest {top_share:.0%}: {k:,} of {frame.height:,}"
    else:
        sel = np.asarray(selected, dtype=bool)
        if sel.shape != (frame.height,):
            raise ValueError(f"selected: one boolean per row of frame ({frame.height}), got shape {sel.shape}")
        how = f"{int(sel.sum()):,} of {frame.height:,} selected"
    labelled = "churned" in frame.columns and frame["churned"].null_count() == 0 and frame.height > 0
    y = frame["churned"].to_numpy().astype(int) if labelled else np.zeros(frame.height, dtype=int)
    g = _aligned(frame, groups, id_column)
    nan = float("nan")
    metrics = {"customers": lambda yt, p: float(len(yt)), "selected": lambda yt, p, s: float(np.sum(s)),
               "selection_rate": lambda yt, p, s: float(np.mean(s)), "mean_risk": lambda yt, p: float(np.mean(p))}
    params = {"selected": {"s": sel}, "selection_rate": {"s": sel}}
    if labelled:
        metrics.update(churn_rate=lambda yt, p: float(np.mean(yt)),
                       calibration_ratio=lambda yt, p: float(np.mean(yt) / np.mean(p)) if np.mean(p) > 0 else nan,
                       fpr=lambda yt, p, s: float(np.mean(s[yt == 0])) if (yt == 0).any() else nan,
                       fnr=lambda yt, p, s: float(np.mean(~s[yt == 1])) if (yt == 1).any() else nan)
        params.update(fpr={"s": sel}, fnr={"s": sel})
    rows, gaps = [], []
    for col in [c for c in g.columns if c != "customer_id"]:
        feat = g[col].fill_null("(missing)").to_numpy()
        mf = MetricFrame(metrics=metrics, y_true=y, y_pred=risk, sensitive_features={col: feat}, sample_params=params)
        by = pl.from_pandas(mf.by_group.reset_index()).rename({col: "group"})
        rows.append(by.with_columns(pl.lit(col).alias("column"), pl.col("group").cast(pl.String)))
        sr = by["selection_rate"]
        gap = {"column": col, "selection_rate_ratio": float(sr.min() / sr.max()) if sr.max() > 0 else None,
               "selection_rate_difference": float(sr.max() - sr.min())}
        if labelled:
            gap.update(fpr_difference=float(by["fpr"].max() - by["fpr"].min()), fnr_difference=float(by["fnr"].max() - by["fnr"].min()),
                       calibration_gap=float(by["calibration_ratio"].max() - by["calibration_ratio"].min()))
        else:
            gap.update(fpr_difference=None, fnr_difference=None, calibration_gap=None)
        gaps.append(gap)
    cols = ["column", "group", "customers", "selected", "selection_rate", "mean_risk"] + (
        ["churn_rate", "calibration_ratio", "fpr", "fnr"] if labelled else [])
    groups_df = pl.concat([r.select(cols) for r in rows], how="vertical_relaxed").with_columns(
        pl.col("customers").cast(pl.Int64), pl.col("selected").cast(pl.Int64))
    gaps_df = pl.DataFrame(gaps, schema={"column": pl.String, "selection_rate_ratio": pl.Float64, "selection_rate_difference": pl.Float64,
                                         "fpr_difference": pl.Float64, "fnr_difference": pl.Float64, "calibration_gap": pl.Float64})
    return Fairness(groups_df, gaps_df, how)


# --- proxies ------------------------------------------------------------------------------------

@dataclass
class Proxies:
    """How well the model's features predict a sensitive column: all together, and each alone."""

    column: str
    classes: list
    auc_all: float           # out-of-fold AUC of a small LightGBM on all features (macro one-vs-rest if > 2 classes)
    accuracy_all: float
    majority_share: float    # accuracy of always guessing the largest group
    features: pl.DataFrame   # feature, pillar, auc_alone (out-of-fold, one feature's bins)

    def summary(self, top: int = 5) -> str:
        head = ", ".join(f"{r['feature']} ({r['auc_alone']:.2f})" for r in self.features.head(top).iter_rows(named=True))
        return (f"'{self.column}' from the model's features: AUC {self.auc_all:.3f} (0.5 = no information), accuracy "
                f"{self.accuracy_all:.3f} vs {self.majority_share:.3f} guessing the largest group. Top proxies: {head}")


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def proxies(trained: TrainedModel, frame: pl.DataFrame, groups: pl.DataFrame, column: str, *, folds: int = 3, seed: int = 0,
            id_column: str = "customer_id") -> Proxies:
    """Proxy detection: can the model's features recover `column` (a sensitive attribute from the raw data)?

    All features: out-of-fold predictions of a small LightGBM (stratified `folds`, one thread).
    Each feature alone: out-of-fold group shares per bin of the feature (its reference quantile
    bins, categories as they are), scored by AUC. Folds keep each customer's rows together.
    Rows whose group is missing are left out.

    Examples
    --------
    >>> from trustml.simulator import simulate
    >>> from trustml.model import train
    >>> w = simulate(800, 12, seed=2); table = build_features(w.customers, w.events, Snapshots())
    >>> trained, split = train(table, trials=0, n_estimators=40, early_stopping=False)
    >>> px = proxies(trained, table.latest(), groups_of(w.customers, columns=["channel"]), "channel")
    >>> px.features["feature"][0], px.auc_all > 0.6
    ('was_referred', True)
    """
    import lightgbm as lgb
    from sklearn.model_selection import StratifiedGroupKFold
    g = _aligned(frame, groups, id_column)
    if column not in g.columns:
        raise ContractError([Problem("groups", column, "not a column of the group table")])
    keep = g[column].is_not_null().to_numpy()
    labels = g[column].to_numpy()[keep].astype(str)
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"proxies: '{column}' has one value only among the scored customers")
    sub = frame.filter(pl.Series(keep))
    X = trained.model.transform_matrix(trained._check(sub))
    counts = np.bincount(y)
    k = int(min(folds, counts.min()))
    if k < 2:
        raise ValueError(f"proxies: a group of '{column}' has fewer than 2 customers")
    # a customer in several snapshots stays in one fold: else the model recognises them, not their group
    ids = sub[id_column].cast(pl.String).to_numpy()
    cv = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(X, y, groups=ids))
    cat = [i for i, n in enumerate(trained.registry.names) if trained.registry[n].categorical]
    proba = np.zeros((len(y), len(classes)))
    for tr, te in cv:
        clf = lgb.LGBMClassifier(n_estimators=150, learning_rate=0.05, num_leaves=15, min_child_samples=20, subsample=0.8,
                                 subsample_freq=1, colsample_bytree=0.8, random_state=seed, n_jobs=1, verbose=-1, deterministic=True,
                                 force_row_wise=True)
        if len(np.unique(y[tr])) < len(classes):
            proba[te] = counts / counts.sum()
            continue
        clf.fit(X[tr], y[tr], categorical_feature=cat or "auto")
        proba[te] = clf.predict_proba(X[te])
    rows = []
    for f in trained.registry:
        prof = _Profile.fit(sub[f.name], f.categorical, 10)
        b = prof.bin_index(sub[f.name])
        p = np.zeros((len(y), len(classes)))
        for tr, te in cv:
            table = np.ones((prof.n_bins, len(classes)))            # add-one smoothing per bin
            np.add.at(table, (b[tr], y[tr]), 1.0)
            p[te] = (table / table.sum(axis=1, keepdims=True))[b[te]]
        rows.append({"feature": f.name, "pillar": f.pillar, "auc_alone": _auc(y, p)})
    feats = pl.DataFrame(rows).sort("auc_alone", descending=True, maintain_order=True)
    return Proxies(column, classes.tolist(), _auc(y, proba), float(np.mean(proba.argmax(axis=1) == y)),
                   float(counts.max() / counts.sum()), feats)
