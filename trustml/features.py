"""Point-in-time snapshots, churn labels, and the trust-pillar feature registry.

A feature at snapshot date ``d`` only sees events with ``timestamp < d`` (strictly before:
an event *at* ``d`` belongs to the future). Labels only look at ``[d + lead, d + lead + horizon)``.

Features are declared, not coded: a `FeatureSpec` says event type(s) x aggregation x window,
and carries the registry metadata (pillar, description, unit, actionable, valid range,
expected direction) that explanations, what-if sliders, monotone constraints and reports read.

Examples
--------
>>> from trustml.simulator import simulate
>>> world = simulate(300, 12, seed=3)
>>> table = build_features(world.customers, world.events, Snapshots(every="3mo"))
>>> table.frame.columns[:3]
['customer_id', 'snapshot_date', 'churned']
>>> table.registry["promise_broken__count_90d"].pillar
'promises'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from trustml.contract import ContractError, Problem
from trustml.pillars import EVENT_TYPES, PILLARS, pillar_of_event

__all__ = ["FeatureSpec", "Feature", "FeatureRegistry", "Snapshots", "FeatureTable", "DEFAULT_SPEC", "VALUES_SPEC",
           "build_features", "snapshot_dates", "AGGREGATIONS", "event_summary", "signal_profile", "plot_signal_profile"]

AGGREGATIONS = ("count", "sum", "mean", "max", "days_since", "share", "trend", "decayed", "rate", "attribute")
_UNITS = {"count": "events", "decayed": "events (recency-weighted)", "days_since": "days", "share": "share 0-1", "trend": "ratio (1 = steady)",
          "rate": "events a month"}


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature: `events` x `agg` x `window_days`, plus what the registry knows of it.

    agg: count | sum | mean | max (of the event value) | days_since (last event, capped at the
    window) | share (count of `events` / count of `events` + `denominator`) | trend (count in the
    last 30 days / the window's monthly average) | decayed (count in the window, each event
    weighted 0.5 ** (age / half_life_days): recent events count most) | rate (events a month: the count in the
    window x 30 / the days it covers, the window or the customer's tenure if shorter, at least 30; a long window
    gives the customer's long-run rate, comparable across tenures) | attribute (a `customers` column, or 'tenure_days').
    direction: +1 if more of it should raise churn risk, -1 if it should lower it, 0 if unknown
    or non-monotone (e.g. marketing contact: a little is welcome, too much erodes trust).
    """

    events: tuple[str, ...] | str
    agg: str
    window_days: int | None = None
    signal: str | None = None           # name stem; default: the event type
    denominator: tuple[str, ...] = ()   # for share
    pillar: str | None = None           # default: the pillar of the event type
    description: str | None = None
    unit: str | None = None
    actionable: bool = False
    valid_range: tuple[float, float] | None = None
    direction: int = 0
    categorical: bool = False
    half_life_days: float = 60.0        # for decayed

    def __post_init__(self):
        if isinstance(self.events, str):
            object.__setattr__(self, "events", (self.events,))
        if isinstance(self.denominator, str):
            object.__setattr__(self, "denominator", (self.denominator,))
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"feature spec {self.events}: unknown aggregation {self.agg!r}; choose one of {AGGREGATIONS}")
        if self.agg != "attribute" and not self.window_days:
            raise ValueError(f"feature spec {self.events}/{self.agg}: needs window_days")
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"feature spec {self.events}: direction must be -1, 0 or +1")

    @property
    def name(self) -> str:
        stem = self.signal or "_or_".join(self.events)
        if self.agg == "attribute":
            return stem
        if self.agg == "decayed":
            return f"{stem}__decayed_{self.window_days}d_hl{int(self.half_life_days)}"
        agg = "trend_30d_vs" if self.agg == "trend" else ("value_" + self.agg if self.agg in ("sum", "mean", "max") and not self.signal else self.agg)
        return f"{stem}__{agg}_{self.window_days}d"


@dataclass(frozen=True)
class Feature:
    """A registry entry: a built feature and what it means."""

    name: str
    pillar: str
    description: str
    unit: str
    actionable: bool
    valid_range: tuple[float, float] | None
    direction: int
    categorical: bool
    spec: FeatureSpec | None = None
    # lever semantics for numeric actionable features (what a what-if may set it to):
    values: tuple[float, ...] | None = None   # exactly these values (e.g. 1, 2, 3, 4 products); else the valid range
    step: float | None = None                 # within the valid range, multiples of `step` from its low end
    integer: bool = False                     # whole numbers only (counts, integer columns, yes/no as 0/1)

    def __post_init__(self):
        if self.spec is not None and self.spec.agg == "count" and not self.integer:
            object.__setattr__(self, "integer", True)   # a count of events is a whole number


@dataclass(frozen=True)
class FeatureRegistry:
    """Ordered features with their pillar, meaning and limits; the one list everything else reads."""

    features: tuple[Feature, ...]

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature named {name!r}; the registry has {len(self.features)} features")

    def __iter__(self):
        return iter(self.features)

    def __len__(self):
        return len(self.features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.categorical]

    def pillar_of(self, name: str) -> str:
        return self[name].pillar

    @property
    def pillars(self) -> list[str]:
        """Pillars present, in the canonical order of `trustml.pillars.PILLARS`."""
        present = {f.pillar for f in self.features}
        return [p for p in PILLARS if p in present]

    def actionable(self) -> list[Feature]:
        return [f for f in self.features if f.actionable]

    def monotone_constraints(self) -> list[int]:
        return [0 if f.categorical else f.direction for f in self.features]

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame([{
            "feature": f.name, "pillar": f.pillar, "description": f.description, "unit": f.unit,
            "actionable": f.actionable, "direction": f.direction,
            "valid_min": None if f.valid_range is None or f.categorical else float(f.valid_range[0]),
            "valid_max": None if f.valid_range is None or f.categorical else float(f.valid_range[1])} for f in self.features],
            schema_overrides={"valid_min": pl.Float64, "valid_max": pl.Float64})

    def to_dict(self) -> list[dict]:
        return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(f).items() if k != "spec"} for f in self.features]

    @classmethod
    def from_dict(cls, rows: Iterable[dict]) -> FeatureRegistry:
        return cls(tuple(Feature(**{**r, "valid_range": tuple(r["valid_range"]) if r.get("valid_range") else None,
                                    "values": tuple(r["values"]) if r.get("values") else None}) for r in rows))


def _describe(s: FeatureSpec) -> str:
    what = " or ".join(s.events).replace("_", " ")
    w = f"in the last {s.window_days} days"
    return {
        "count": f"Number of '{what}' events {w}.",
        "sum": f"Total value of '{what}' events {w}.",
        "mean": f"Average value of '{what}' events {w}.",
        "max": f"Largest value of '{what}' events {w}.",
        "days_since": f"Days since the last '{what}' event (capped at {s.window_days} and at the customer's tenure).",
        "share": f"Share of '{what}' among '{what}' + '{' or '.join(s.denominator).replace('_', ' ')}' {w}.",
        "decayed": f"'{what}' events in the last {s.window_days} days, weighted by recency (half-life {s.half_life_days:g} days).",
        "trend": f"'{what}' events in the last 30 days relative to the {s.window_days}-day monthly average.",
        "rate": f"'{what}' events a month over the last {s.window_days} days (or since signup, if shorter).",
        "attribute": f"Customer attribute '{s.signal or s.events[0]}'.",
    }[s.agg]


def _feature_of(spec: FeatureSpec) -> Feature:
    pillar = spec.pillar or pillar_of_event(spec.events[0])
    unit = spec.unit or _UNITS.get(spec.agg) or (EVENT_TYPES[spec.events[0]].value if spec.events[0] in EVENT_TYPES else "") or ""
    return Feature(spec.name, pillar, spec.description or _describe(spec), unit, spec.actionable,
                   spec.valid_range, spec.direction, spec.categorical, spec)


_S = FeatureSpec
DEFAULT_SPEC: tuple[FeatureSpec, ...] = (
    # service quality: tickets are confounded with heavy use, so no direction is imposed on their count
    _S("ticket_opened", "count", 90, description="Support tickets opened in the last 90 days (heavy users open more)."),
    _S("ticket_resolved", "mean", 90, signal="resolution_hours", unit="hours", actionable=True,
       valid_range=(0.5, 240), direction=1, description="Mean hours to resolve a ticket, last 90 days."),
    _S("ticket_reopened", "count", 90, actionable=True, valid_range=(0, 5), direction=1,
       description="Tickets reopened in the last 90 days: fixes that did not hold."),
    _S("csat", "mean", 180, signal="csat_score", unit="score 1-5", direction=-1,
       description="Mean CSAT answer (1-5), last 180 days."),
    # empathy
    _S("empathy_score", "mean", 180, signal="empathy_score", unit="score 1-5", actionable=True,
       valid_range=(1, 5), direction=-1, description="Mean agent empathy score (1-5) on support contacts, last 180 days."),
    # promises
    _S("promise_broken", "count", 90, actionable=True, valid_range=(0, 5), direction=1,
       description="Promises broken in the last 90 days."),
    _S("promise_broken", "share", 180, denominator=("promise_kept",), actionable=True, valid_range=(0, 1), direction=1,
       description="Share of promises due in the last 180 days that were broken."),
    _S("promise_kept", "count", 90, direction=-1, description="Promises kept in the last 90 days."),
    # transparency
    _S("price_change_unannounced", "count", 365, actionable=True, valid_range=(0, 3), direction=1,
       description="Price changes made without notice, last 365 days."),
    _S("price_change_announced", "count", 365, description="Price changes announced in advance, last 365 days."),
    _S(("price_change_announced", "price_change_unannounced"), "sum", 365, signal="price_change_pct", unit="%",
       direction=1, description="Total price change in the last 365 days, %."),
    _S("surprise_fee", "count", 180, actionable=True, valid_range=(0, 5), direction=1,
       description="Unexpected fees in the last 180 days."),
    _S("privacy_incident", "count", 365, actionable=True, valid_range=(0, 3), direction=1,
       description="Privacy incidents affecting the customer, last 365 days."),
    # respect for time: non-monotone on purpose (direction 0)
    _S("marketing_contact", "count", 30, actionable=True, valid_range=(0, 12),
       description="Marketing contacts in the last 30 days."),
    _S("marketing_contact", "count", 90, actionable=True, valid_range=(0, 30),
       description="Marketing contacts in the last 90 days."),
    _S("marketing_contact", "mean", 90, signal="marketing_engagement", unit="share 0-1", direction=-1,
       description="Share of marketing contacts the customer engaged with, last 90 days (low = fatigue)."),
    # advocacy
    _S("referral_given", "count", 365, direction=-1, description="Referrals the customer gave, last 365 days."),
    _S("referral_given", "days_since", 365, direction=1, description="Days since the customer last referred someone (365 = not in the last year)."),
    _S("referred_by", "attribute", signal="was_referred", pillar="advocacy", unit="yes/no", direction=-1,
       description="The customer came through a referral."),
    _S("promise_broken", "decayed", 365, actionable=True, valid_range=(0, 5), direction=1,
       description="Broken promises, recent ones weighted most (half-life 60 days)."),
    _S("ticket_reopened", "decayed", 365, actionable=True, valid_range=(0, 5), direction=1,
       description="Reopened tickets, recent ones weighted most (half-life 60 days)."),
    _S("price_change_unannounced", "decayed", 365, actionable=True, valid_range=(0, 3), direction=1,
       description="Unannounced price changes, recent ones weighted most (half-life 60 days)."),
    _S("referral_given", "decayed", 365, direction=-1,
       description="Referrals given, recent ones weighted most (half-life 60 days)."),
    _S("marketing_contact", "decayed", 365, actionable=True, valid_range=(0, 30),
       description="Marketing contacts, recent ones weighted most (half-life 60 days)."),
    # engagement (context)
    _S("usage", "count", 30, direction=-1, description="Product sessions in the last 30 days."),
    _S("usage", "count", 90, direction=-1, description="Product sessions in the last 90 days."),
    _S("usage", "trend", 90, description="Sessions in the last 30 days vs the 90-day monthly average."),
    _S("usage", "days_since", 90, direction=1, description="Days since the last session (capped at 90)."),
    _S("usage", "sum", 30, signal="usage_minutes", unit="minutes", direction=-1, description="Minutes of use, last 30 days."),
    # account (context)
    _S("tenure_days", "attribute", pillar="account", unit="days", description="Days since signup."),
    _S("plan", "attribute", pillar="account", unit="category", categorical=True, description="Plan or segment."),
    _S("monthly_price", "attribute", pillar="account", unit="currency", description="Monthly price at signup."),
    # long-run habits (added for time to churn: what a customer keeps doing predicts the months ahead; a
    # contact's value is 1 if the customer engaged with it, so the sums count engaged contacts)
    _S("marketing_contact", "sum", 30, signal="marketing_engaged", unit="contacts",
       description="Marketing contacts the customer engaged with, last 30 days."),
    _S("marketing_contact", "sum", 90, signal="marketing_engaged", unit="contacts",
       description="Marketing contacts the customer engaged with, last 90 days."),
    _S("marketing_contact", "mean", 365, signal="marketing_engagement", unit="share 0-1",
       description="Share of marketing contacts the customer engaged with, last 365 days."),
    _S("marketing_contact", "mean", 1095, signal="marketing_engagement", unit="share 0-1",
       description="Share of marketing contacts the customer engaged with, last 3 years (about the whole tenure)."),
    _S("marketing_contact", "rate", 365, description="Marketing contacts a month, last 365 days (or since signup)."),
    _S("marketing_contact", "rate", 1095, description="Marketing contacts a month, last 3 years (or since signup)."),
    _S(("price_change_announced", "price_change_unannounced"), "sum", 1095, signal="price_change_pct", unit="%",
       description="Total price change in the last 3 years (about the whole tenure), %."),
    _S("ticket_opened", "rate", 365, description="Support tickets a month, last 365 days (or since signup)."),
    _S("ticket_opened", "rate", 1095, description="Support tickets a month, last 3 years (or since signup)."),
    _S("usage", "rate", 365, description="Product sessions a month, last 365 days (or since signup)."),
    _S("usage", "rate", 1095, description="Product sessions a month, last 3 years (or since signup): the customer's long-run usage."),
)
# values alignment: add to a spec when the data has values events (e.g. simulate(config=SimConfig(values_events=True)))
VALUES_SPEC: tuple[FeatureSpec, ...] = (
    _S("ethics_incident", "decayed", 365, direction=1, description="Ethics incidents the customer was exposed to, recent ones weighted most."),
    _S("values_commitment", "decayed", 365, direction=-1, description="Values commitments the customer heard of, recent ones weighted most."),
    _S("values_complaint", "count", 365, direction=1, description="Complaints about the company's values or conduct, last 365 days."),
    _S("values_complaint", "days_since", 365, description="Days since the customer last complained about values (365 = not in the last year)."),
)


@dataclass(frozen=True)
class Snapshots:
    """When to observe customers and how to label them.

    every: polars duration between snapshot dates ('1mo', '2w', ...). start/end: first and last
    snapshot (default: from the first month with data to the as-of date). horizon: label window
    length; lead: gap between snapshot and label window. churn: 'cancellation' (contractual: a
    cancellation event) or 'inactivity' (non-contractual: no event of `activity_events` within the
    label window; a customer counts as active at `d` if they had one in the `active_gap_days` before).
    """

    every: str = "1mo"
    start: dt.date | None = None
    end: dt.date | None = None
    horizon: str = "1mo"
    lead: str = "0d"
    churn: str = "cancellation"
    activity_events: tuple[str, ...] = ()
    active_gap_days: int = 90

    def __post_init__(self):
        if self.churn not in ("cancellation", "inactivity", "label"):
            raise ValueError(f"Snapshots.churn must be 'cancellation' or 'inactivity' ('label': a flat table's own column), got {self.churn!r}")


@dataclass
class FeatureTable:
    """The model-ready table: one row per customer and snapshot date, plus its registry.

    A flat table (one row per customer, `is_flat`) has no dates: its ``snapshot_date`` is null and
    `as_of` is None, so no output shows an invented date.
    """

    frame: pl.DataFrame
    registry: FeatureRegistry
    snapshots: Snapshots
    as_of: dt.datetime | None
    dropped: dict[str, str] = field(default_factory=dict)  # feature -> why it was left out

    def write(self, path) -> None:
        """Write `path` (parquet) and a sidecar `path.json` with the registry and snapshot settings."""
        import json
        from pathlib import Path
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"registry": self.registry.to_dict(), "as_of": self.as_of.isoformat() if self.as_of else None, "dropped": self.dropped,
                "snapshots": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in vars(self.snapshots).items()}}
        tmp = path.with_name(path.name + ".tmp")
        self.frame.write_parquet(tmp)
        path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, path, *, n_rows: int | None = None) -> FeatureTable:
        """The table `write` wrote (`n_rows`: its first rows only; 0: the registry and settings alone)."""
        import json
        from pathlib import Path
        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not path.exists() or not side.exists():
            raise FileNotFoundError(f"{path}: need the feature table and its sidecar {side.name} (written by `trustml features`)")
        meta = json.loads(side.read_text())
        snaps = {k: (dt.date.fromisoformat(v) if k in ("start", "end") and v else v) for k, v in meta["snapshots"].items()}
        snaps["activity_events"] = tuple(snaps.get("activity_events") or ())
        return cls(pl.read_parquet(path, n_rows=n_rows), FeatureRegistry.from_dict(meta["registry"]), Snapshots(**snaps),
                   dt.datetime.fromisoformat(meta["as_of"]) if meta.get("as_of") else None, meta.get("dropped", {}))

    def labelled(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("churned").is_not_null())

    @property
    def is_flat(self) -> bool:
        """One undated snapshot labelled by the data's own churn column (a flat table, e.g. Telco)."""
        return self.snapshots.churn == "label"

    def latest(self) -> pl.DataFrame:
        """The rows of the latest snapshot: the customers to act on now (every row of a flat table, whose date is null)."""
        return self.frame.filter(pl.col("snapshot_date").eq_missing(self.frame["snapshot_date"].max()))

    def X(self, frame: pl.DataFrame | None = None) -> pl.DataFrame:
        return (self.frame if frame is None else frame).select(self.registry.names)


def snapshot_dates(start: dt.date, end: dt.date, every: str) -> list[dt.date]:
    return pl.date_range(start, end, every, eager=True).to_list()


def _event_expr(spec: FeatureSpec, d: dt.datetime, codes: dict[str, int]) -> pl.Expr:
    """One feature's aggregate over one customer's events before `d` (``event_type`` holds `codes` of the types)."""
    ts, et, v = pl.col("timestamp"), pl.col("event_type"), pl.col("value")
    in_types = et.is_in(_codes_of(spec.events, codes))
    since = ts >= pl.lit(d - dt.timedelta(days=spec.window_days))  # events are already filtered to ts < d
    cond = in_types & since
    name = spec.name
    if spec.agg in ("count", "rate"):   # rate: divided by the days covered once the tenure is known (`_fill_expr`)
        return cond.sum().cast(pl.Float64).alias(name)
    if spec.agg in ("sum", "max", "mean"):
        x = v.filter(cond)
        return getattr(x, spec.agg)().cast(pl.Float64).alias(name)
    if spec.agg == "days_since":
        last = ts.filter(cond).max()
        return ((pl.lit(d) - last).dt.total_seconds() / 86400.0).fill_null(float(spec.window_days)).alias(name)
    if spec.agg == "share":
        den = cond.sum() + (et.is_in(_codes_of(spec.denominator, codes)) & since).sum()
        return pl.when(den > 0).then(cond.sum() / den).otherwise(None).cast(pl.Float64).alias(name)
    if spec.agg == "decayed":
        age_days = (pl.lit(d) - ts).dt.total_seconds() / 86400.0
        return (0.5 ** (age_days / spec.half_life_days)).filter(cond).sum().cast(pl.Float64).alias(name)
    if spec.agg == "trend":
        recent = (in_types & (ts >= pl.lit(d - dt.timedelta(days=30)))).sum().cast(pl.Float64)
        avg = cond.sum().cast(pl.Float64) * 30.0 / spec.window_days
        return pl.when(avg > 0).then(recent / avg).otherwise(None).alias(name)
    raise AssertionError(spec.agg)


def _codes_of(types: Sequence[str], codes: dict[str, int]) -> pl.Series:
    return pl.Series([codes[t] for t in types if t in codes], dtype=pl.UInt16)


def _tenure_at(d: dt.datetime) -> pl.Expr:  # days since signup at snapshot `d`
    return (pl.lit(d) - pl.col("signup_date").cast(pl.Datetime("us"))).dt.total_seconds() / 86400.0


def _fill_value(spec: FeatureSpec) -> float | None:
    """What a feature is for a customer with no events in its window: counts are 0, means unknown."""
    return 0.0 if spec.agg in ("count", "sum", "decayed", "rate") else (float(spec.window_days) if spec.agg == "days_since" else None)


def _fill_expr(spec: FeatureSpec) -> pl.Expr:
    """A feature's final value from its aggregate and the customer's tenure (days) at the snapshot, `_tenure_now`."""
    x = pl.col(spec.name).fill_null(_fill_value(spec))
    if spec.agg == "days_since":
        x = pl.min_horizontal(x, pl.col("_tenure_now"))
    elif spec.agg == "rate":   # per 30 days of the window the customer was here for (at least 30 days)
        x = x * 30.0 / pl.col("_tenure_now").clip(30.0, float(spec.window_days))
    return x.alias(spec.name)


def _attribute_expr(spec: FeatureSpec, d: dt.datetime, schema: pl.Schema) -> pl.Expr:
    col = spec.events[0]
    if col == "tenure_days":
        return ((pl.lit(d) - pl.col("signup_date").cast(pl.Datetime("us"))).dt.total_seconds() / 86400.0).alias(spec.name)
    if spec.categorical:
        return pl.col(col).cast(pl.String).alias(spec.name)
    if col == "referred_by":
        referred = pl.col("referred_by").is_not_null()
        if "channel" in schema:
            referred = referred | (pl.col("channel").cast(pl.String) == "referral")
        return referred.cast(pl.Float64).alias(spec.name)
    return pl.col(col).cast(pl.Float64).alias(spec.name)


def _resolve_spec(spec: Sequence[FeatureSpec], event_types: set[str], columns: set[str]) -> tuple[list[FeatureSpec], dict[str, str]]:
    """Keep the specs the data can feed; say why the others are left out (a pillar with no data)."""
    kept, dropped = [], {}
    for s in spec:
        if s.agg == "attribute":
            need = s.events[0]
            if need == "tenure_days" or need in columns:
                kept.append(s)
            else:
                dropped[s.name] = f"column '{need}' not in table 'customers'"
        elif not set(s.events) & event_types:
            dropped[s.name] = f"no '{' or '.join(s.events)}' events in the data"
        else:
            kept.append(s)
    names = [s.name for s in kept]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"feature spec: duplicate feature names {sorted(dup)}; give them distinct `signal`s")
    return kept, dropped


def build_features(
    customers: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
    snapshots: Snapshots = Snapshots(),
    spec: Sequence[FeatureSpec] = DEFAULT_SPEC,
    *,
    as_of: dt.datetime | dt.date | None = None,
    streaming: bool = False,
) -> FeatureTable:
    """Snapshots x features x labels, built lazily and collected once.

    Rows: customers active at each snapshot date (signed up before it, not yet churned).
    `churned` is 1/0 when the label window ends by `as_of` (default: the last event), else null:
    those rows are for scoring. Rows are sorted by (snapshot_date, customer_id).
    """
    cust = customers.lazy() if isinstance(customers, pl.DataFrame) else customers
    ev = events.lazy() if isinstance(events, pl.DataFrame) else events
    ev_schema, cust_schema = ev.collect_schema(), cust.collect_schema()
    for table, schema, need in (("events", ev_schema, ("customer_id", "timestamp", "event_type")),
                                ("customers", cust_schema, ("customer_id", "signup_date"))):
        missing = [c for c in need if c not in schema]
        if missing:
            raise ContractError([Problem(table, c, "required column is missing") for c in missing])
    if "value" not in ev_schema:
        ev = ev.with_columns(value=pl.lit(None, dtype=pl.Float64))
    ev = ev.with_columns(pl.col("event_type").cast(pl.String), pl.col("timestamp").cast(pl.Datetime("us")))
    stats = ev.select(pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi"),
                      pl.col("event_type").unique().implode().alias("types")).collect()
    if stats["lo"][0] is None:
        raise ContractError([Problem("events", None, "table is empty")])
    types = set(stats["types"][0].to_list())
    if as_of is None:
        as_of = stats["hi"][0] + dt.timedelta(microseconds=1)
    as_of = dt.datetime.combine(as_of, dt.time()) if not isinstance(as_of, dt.datetime) else as_of
    kept, dropped = _resolve_spec(spec, types, set(cust_schema))
    start = snapshots.start or _next_month(stats["lo"][0].date())
    end = snapshots.end or as_of.date()
    dates = [d for d in snapshot_dates(start, end, snapshots.every) if dt.datetime.combine(d, dt.time()) <= as_of]
    if not dates:
        raise ValueError(f"no snapshot dates between {start} and {end} (as-of {as_of}); check Snapshots(start=, end=, every=)")
    if snapshots.churn == "cancellation" and "cancellation" not in types:
        raise ContractError([Problem("events", "event_type",
                                     "no 'cancellation' events: use Snapshots(churn='inactivity') for non-contractual data")])
    activity = list(snapshots.activity_events or sorted(types - {"cancellation"}))
    # each customer's end: first cancellation (contractual)
    cancel = (ev.filter(pl.col("event_type") == "cancellation").group_by("customer_id")
              .agg(pl.col("timestamp").min().alias("_cancel_ts")))
    # the snapshots' aggregations read event types as small integer codes and customers as row numbers (a third
    # faster than strings, same values); events of customers not in `customers` feed no row, as before
    codes = {t: i for i, t in enumerate(sorted(types))}
    ids = cust.select("customer_id").unique(maintain_order=True).with_row_index("_cid")
    coded = (ev.select(pl.col("customer_id"), "timestamp", pl.col("event_type").replace_strict(codes, return_dtype=pl.UInt16), "value")
             .join(ids, on="customer_id", how="inner", maintain_order="left").drop("customer_id"))
    if not streaming:
        coded, ids = coded.collect().lazy(), ids.collect().lazy()   # once, not once per snapshot date
    cust = cust.join(ids, on="customer_id", how="left", maintain_order="left")
    event_specs = [s for s in kept if s.agg != "attribute"]
    attr_specs = [s for s in kept if s.agg == "attribute"]
    frames = []
    for d in dates:
        dts = dt.datetime.combine(d, dt.time())
        # LEAKAGE GUARD: only events strictly before the snapshot date feed its features
        past = coded.filter(pl.col("timestamp") < pl.lit(dts))
        aggs = [_event_expr(s, dts, codes) for s in event_specs]
        aggs.append(pl.col("timestamp").filter(pl.col("event_type").is_in(_codes_of(activity, codes))).max().alias("_last_activity"))
        feats = past.group_by("_cid").agg(aggs)
        base = (cust.filter(pl.col("signup_date").cast(pl.Datetime("us")) < pl.lit(dts))
                .select("customer_id", "_cid", *[_attribute_expr(s, dts, cust_schema) for s in attr_specs], _tenure_now=_tenure_at(dts))
                .with_columns(snapshot_date=pl.lit(d)))
        frames.append(base.join(feats, on="_cid", how="left").drop("_cid"))
    horizon_start = pl.col("snapshot_date").dt.offset_by(snapshots.lead).cast(pl.Datetime("us"))
    horizon_end = pl.col("snapshot_date").dt.offset_by(snapshots.lead).dt.offset_by(snapshots.horizon).cast(pl.Datetime("us"))
    snap = pl.col("snapshot_date").cast(pl.Datetime("us"))
    if snapshots.churn == "cancellation":
        ends, on = cancel, ["customer_id"]
        # a customer who cancels inside the lead window is already lost: no label to learn from
        active = pl.col("_cancel_ts").is_null() | (pl.col("_cancel_ts") >= horizon_start)
        churned = pl.col("_cancel_ts").is_not_null() & (pl.col("_cancel_ts") >= horizon_start) & (pl.col("_cancel_ts") < horizon_end)
    else:
        # the label looks only at the future window [start, end)
        active = pl.col("_last_activity").is_not_null() & (pl.col("_last_activity") >= snap - pl.duration(days=snapshots.active_gap_days))
        future = ev.filter(pl.col("event_type").is_in(activity)).select("customer_id", pl.col("timestamp").alias("_ts"))
        # first activity at or after the label window opens (activity inside the lead window does not count)
        ends, on = _next_activity(future, dates, snapshots.lead), ["customer_id", "snapshot_date"]
        churned = pl.col("_next_ts").is_null() | (pl.col("_next_ts") >= horizon_end)
    labelled = horizon_end <= pl.lit(as_of)
    # no event in the window: counts are 0; days_since is the window, but never more than the customer's tenure (a
    # 2-day-old customer has not gone "365 days without a post"); `_tenure_now` is dropped by the final select
    fills = [_fill_expr(s) for s in event_specs if _fill_value(s) is not None]
    registry = FeatureRegistry(tuple(_feature_of(s) for s in kept))

    def finish(lz: pl.LazyFrame, ends: pl.LazyFrame) -> pl.LazyFrame:
        return (lz.join(ends, on=on, how="left").filter(active)
                .with_columns(churned=pl.when(labelled).then(churned.cast(pl.Int8)).otherwise(None))
                .with_columns(fills).select("customer_id", "snapshot_date", "churned", *registry.names))

    if streaming:
        # larger-than-memory logs: one snapshot at a time through the streaming engine, so only one
        # snapshot's per-customer state is held; the label table (one row per customer) is built once
        ends = ends.collect(engine="streaming").lazy()
        parts = [finish(f, ends).sort("customer_id").collect(engine="streaming") for f in frames]  # dates ascend
        frame = pl.concat(parts, how="vertical", rechunk=False)
    else:
        # the in-memory engine: polars' default may sum floats in another order for another table size,
        # and a customer's features must not depend on who else is in the table (partitions, samples)
        frame = finish(pl.concat(frames, how="vertical"), ends).sort("snapshot_date", "customer_id").collect(engine="in-memory")
    return FeatureTable(frame, registry, snapshots, as_of, dropped)


def _next_activity(future: pl.LazyFrame, dates: list[dt.date], lead: str = "0d") -> pl.LazyFrame:
    """First activity at or after each label window's start (snapshot date + lead), per customer.

    A forward as-of join: it looks only at the future, which is what a label may do.
    """
    snaps = pl.LazyFrame({"snapshot_date": dates}).with_columns(
        _ts=pl.col("snapshot_date").dt.offset_by(lead).cast(pl.Datetime("us")))
    keys = future.select("customer_id").unique().join(snaps, how="cross").sort("_ts")
    nxt = future.sort("_ts").with_columns(_next_ts=pl.col("_ts"))
    # both sides are sorted by _ts globally, hence within each customer too
    return keys.join_asof(nxt, on="_ts", by="customer_id", strategy="forward", check_sortedness=False).select("customer_id", "snapshot_date", "_next_ts")


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)



def event_summary(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Events per trust pillar and type: how many, how many customers, events per customer who has any.

    A LazyFrame (e.g. `Study.scan_events`) is read column by column as it is counted, never whole.
    """
    pillar = pl.col("event_type").cast(pl.String).replace_strict({t: pillar_of_event(t) for t in EVENT_TYPES}, default="other",
                                                                  return_dtype=pl.String)
    return (events.lazy().group_by("event_type")
            .agg(pl.len().alias("events"), pl.col("customer_id").n_unique().alias("customers"))
            .select(pillar.alias("pillar"), "event_type", "events", "customers")
            .with_columns(per_customer=(pl.col("events") / pl.col("customers")).round(2))
            .sort("pillar", "events", descending=[False, True]).collect())


def signal_profile(table: FeatureTable | pl.DataFrame | pl.LazyFrame, feature: str, bins: int = 8) -> pl.DataFrame:
    """Observed churn rate by bins of one feature (labelled rows): the raw shape before any model.

    Count features with few distinct values get one bin per value; others quantile bins. `table`: a
    `FeatureTable` or its rows, e.g. a scan (`Study.scan_features`: only the two columns are read).
    """
    rows = table.frame if isinstance(table, FeatureTable) else table
    lab = rows.lazy().filter(pl.col("churned").is_not_null()).select(feature, "churned").drop_nulls(feature).collect()
    x = lab[feature]
    if x.dtype == pl.String or x.n_unique() <= bins:
        key = x.cast(pl.String) if x.dtype == pl.String else x
        grouped = lab.with_columns(bin=key)
    else:   # quantile bins, right-closed; equal quantiles merge
        values = x.cast(pl.Float64).to_numpy()
        breaks = np.unique(np.quantile(values, np.arange(1, bins) / bins))
        edges = [-np.inf, *breaks, np.inf]
        names = np.array([f"({edges[i]:.4g}, {edges[i + 1]:.4g}]" for i in range(len(edges) - 1)])
        grouped = lab.with_columns(bin=pl.Series(names[np.searchsorted(breaks, values, side="left")]))
    out = grouped.group_by("bin").agg(pl.len().alias("rows"), pl.col("churned").mean().alias("churn_rate"),
                                      pl.col(feature).min().alias("_lo"))
    return out.sort("_lo").drop("_lo")


def plot_signal_profile(profile: pl.DataFrame, feature: str, ax=None):
    """Bar chart of `signal_profile`: churn rate per bin, with the number of rows on each bar."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(7, 3.2))[1]
    ax.bar([str(b) for b in profile["bin"]], profile["churn_rate"], color="#4c72b0")
    for i, (r, n) in enumerate(zip(profile["churn_rate"], profile["rows"], strict=True)):
        ax.annotate(f"{n:,}", (i, r), ha="center", va="bottom", fontsize=7)
    ax.set(title=f"Observed churn rate by {feature}", xlabel=feature, ylabel="churn rate in the label window")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    return ax
