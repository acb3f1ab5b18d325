"""Bring your own data: a mapping file says what each column or event type means in trust terms.

Two kinds of data:

* ``kind = "flat"``: one row per customer with a churn column (like the Telco table);
* ``kind = "events"``: an event log (id, timestamp, type or one fixed type, optional value);
  churn by inactivity, or by a cancellation event type.

The mapping (TOML or YAML, or the same dict in Python) names the id, target or timestamp
columns, which columns or event types belong to which trust pillar, which are actionable, and
the customer-value column. Anything not mapped is kept under the pillar "other", never dropped
silently; columns left out on purpose (``sensitive``) are listed in the feature table's
``dropped`` with the reason. CSV, whitespace-separated text and parquet are read; types are
inferred, then checked. Every problem names the file, the column and what is wrong, and nothing
is written when there is one. Input files are only read.

Examples
--------
>>> m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": ["yes"]},
...                        "pillars": {"promises": ["contract"]}, "actionable": ["contract"]})
>>> import polars as pl
>>> df = pl.DataFrame({"id": ["a", "b", "c", "d"], "left": ["yes", "no", "no", "yes"],
...                    "contract": ["monthly", "yearly", "yearly", "monthly"], "spend": [10.0, 20.0, 30.0, 5.0]})
>>> table = flat_table(df, m, source="demo.csv")
>>> [(f.name, f.pillar, f.actionable) for f in table.registry]
[('contract', 'promises', True), ('spend', 'other', False)]
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from trustml.contract import ContractError, Problem
from trustml.features import DEFAULT_SPEC, Feature, FeatureRegistry, FeatureSpec, FeatureTable, Snapshots
from trustml.pillars import EVENT_TYPES, PILLARS

__all__ = ["Mapping", "load_mapping", "read_data", "flat_table", "event_tables", "value_of", "SHIPPED"]

SHIPPED = Path(__file__).with_name("mappings")
_FLAT_DATE = dt.date(1970, 1, 1)   # flat tables have no dates: one undated "snapshot"
_MAX_CATEGORIES = 50               # a text column with more distinct values is an identifier or free text, not a category


@dataclass(frozen=True)
class Mapping:
    """What the user's columns mean. See the module docstring and `trustml/mappings/*.toml`."""

    kind: str
    id: str
    name: str = ""
    target: str | None = None                   # flat: the churn column
    positive: tuple[str, ...] = ("Yes", "yes", "1", "True", "true")
    negative: tuple[str, ...] | None = None     # flat: labels meaning "stayed"; if given, any other label is an error
    timestamp: str | None = None                # events
    timestamp_format: str | None = None
    event_type: str | None = None               # events: the column, or None when every row is `default_type`
    default_type: str | None = None
    value: str | None = None                    # events: numeric value column
    event_types: dict = field(default_factory=dict)   # raw type -> contract type (e.g. 'Complaint' -> 'ticket_opened')
    pillars: dict = field(default_factory=dict)       # pillar -> [columns or event types]
    actionable: dict = field(default_factory=dict)    # column/event type -> allowed values (None: all seen / valid range)
    directions: dict = field(default_factory=dict)    # column -> +1 / -1
    sensitive: tuple[str, ...] = ()                   # columns kept out of the model and reports
    monthly_value: str | None = None                  # column of monthly revenue per customer
    customer_value: str | None = None                 # or: a column/feature with the value at stake, in money
    source: dict = field(default_factory=dict)        # format, separator, header, columns
    churn: dict = field(default_factory=dict)         # events: Snapshots settings
    subscriptions: dict = field(default_factory=dict)  # events: file, id, start, end (+ attribute columns)
    origin: str = "<dict>"

    @classmethod
    def from_dict(cls, d: dict, origin: str = "<dict>") -> Mapping:
        problems = []
        where = Path(origin).name

        def bad(key, what):
            problems.append(Problem(where, key, what))

        known = {"name", "kind", "columns", "pillars", "actionable", "directions", "sensitive", "source", "churn",
                 "event_types", "events", "subscriptions"}
        for k in d:
            if k not in known:
                bad(k, f"unknown key; expected one of {sorted(known)}")
        kind = d.get("kind")
        if kind not in ("flat", "events"):
            bad("kind", f"must be 'flat' or 'events', got {kind!r}")
        cols = d.get("columns") or {}
        if not cols.get("id"):
            bad("columns.id", "the id column is required")
        if kind == "flat" and not cols.get("target"):
            bad("columns.target", "a flat table needs its churn column")
        if kind == "events" and not cols.get("timestamp"):
            bad("columns.timestamp", "an event log needs its timestamp column")
        events = d.get("events") or {}
        if kind == "events" and not cols.get("event_type") and not events.get("type"):
            bad("columns.event_type", "name the event type column, or set [events] type = '...' when every row is one type")
        pillars = d.get("pillars") or {}
        for p, members in pillars.items():
            if p not in PILLARS:
                bad(f"pillars.{p}", f"unknown pillar; choose from {list(PILLARS)}")
            if not isinstance(members, list):
                bad(f"pillars.{p}", "must be a list of column or event-type names")
        act = d.get("actionable") or {}
        act = {a: None for a in act} if isinstance(act, list) else {k: (tuple(v) if isinstance(v, list) else v) for k, v in act.items()}
        dirs = d.get("directions") or {}
        for k, v in dirs.items():
            if v not in (-1, 0, 1):
                bad(f"directions.{k}", f"must be -1, 0 or +1, got {v!r}")
        subs = d.get("subscriptions") or {}
        if subs and not (subs.get("file") and subs.get("start")):
            bad("subscriptions", "needs `file` and `start` (signup date column); `end` (cancellation date) is optional")
        if problems:
            raise ContractError(problems)
        pos = cols.get("positive", cls.positive)
        neg = cols.get("negative")
        return cls(kind=kind, id=cols["id"], name=d.get("name", ""), target=cols.get("target"),
                   positive=tuple(str(x) for x in (pos if isinstance(pos, list | tuple) else [pos])),
                   negative=None if neg is None else tuple(str(x) for x in (neg if isinstance(neg, list | tuple) else [neg])),
                   timestamp=cols.get("timestamp"), timestamp_format=cols.get("timestamp_format"),
                   event_type=cols.get("event_type"), default_type=events.get("type"), value=cols.get("value"),
                   event_types=dict(d.get("event_types") or {}), pillars={p: list(m) for p, m in pillars.items()},
                   actionable=act, directions=dict(dirs), sensitive=tuple(d.get("sensitive") or ()),
                   monthly_value=cols.get("monthly_value"), customer_value=cols.get("customer_value"),
                   source=dict(d.get("source") or {}), churn=dict(d.get("churn") or {}), subscriptions=dict(subs),
                   origin=origin)

    def pillar_of(self, name: str) -> str:
        for p, members in self.pillars.items():
            if name in members:
                return p
        return "other"

    def mentioned_columns(self) -> dict[str, str]:
        """Column names the mapping refers to, with where it refers to them (for flat tables)."""
        out = {self.id: "columns.id"}
        for key in ("target", "monthly_value", "customer_value", "timestamp", "event_type", "value"):
            if getattr(self, key):
                out[getattr(self, key)] = f"columns.{key}"
        if self.kind == "flat":
            for p, members in self.pillars.items():
                out.update({m: f"pillars.{p}" for m in members})
            out.update({a: "actionable" for a in self.actionable})
            out.update({s: "sensitive" for s in self.sensitive})
            out.update({k: "directions" for k in self.directions})
        return out


def load_mapping(path_or_name: str | Path) -> Mapping:
    """Read a mapping from TOML or YAML; a bare name ('telco', 'cdnow') is one shipped with trustml."""
    path = Path(path_or_name)
    if not path.exists() and (SHIPPED / f"{path_or_name}.toml").exists():
        path = SHIPPED / f"{path_or_name}.toml"
    if not path.exists():
        shipped = sorted(p.stem for p in SHIPPED.glob("*.toml"))
        raise FileNotFoundError(f"mapping {path_or_name}: no such file (shipped mappings: {shipped})")
    text = path.read_bytes()
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError([Problem(path.name, None, f"not UTF-8 text (byte {e.start})")]) from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            d = yaml.load(text, Loader=_yaml_loader())
        else:
            d = tomllib.loads(text)
    except Exception as e:  # tomllib / yaml parse errors carry the line
        raise ContractError([Problem(path.name, None, f"cannot parse: {e}")]) from None
    if not isinstance(d, dict):
        raise ContractError([Problem(path.name, None, "a mapping must be a table of keys")])
    return Mapping.from_dict(d, origin=str(path))


def _yaml_loader():
    """YAML's safe loader, except that yes/no/on/off stay text (YAML 1.1 reads them as booleans, and churn
    labels are often exactly those words); only true/false are booleans."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass
    bool_tag = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != bool_tag]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return Loader


def read_data(path: str | Path, mapping: Mapping | None = None) -> pl.DataFrame:
    """Read CSV, whitespace-separated text or parquet as the mapping's [source] says (default, or no mapping: by suffix)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    name = path.name
    source = mapping.source if mapping is not None else {}
    fmt = source.get("format") or ("parquet" if path.suffix == ".parquet" else "csv")
    if path.stat().st_size == 0:
        raise ContractError([Problem(name, None, "file is empty")])
    try:
        if fmt == "parquet":
            df = pl.read_parquet(path)
        else:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = raw[:e.start].count(b"\n") + 1
                raise ContractError([Problem(name, None, f"not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8")]) from None
            if fmt == "whitespace":
                df = _read_whitespace(text, mapping, name)
            elif fmt == "csv":
                import io
                df = pl.read_csv(io.StringIO(text), separator=source.get("separator", ","),
                                 infer_schema_length=None, has_header=source.get("header", True),
                                 new_columns=source.get("columns"))
            else:
                raise ContractError([Problem(Path(mapping.origin).name, "source.format", f"unknown format {fmt!r}: csv, whitespace or parquet")])
    except ContractError:
        raise
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as e:
        raise ContractError([Problem(name, None, f"cannot read as {fmt}: {str(e).splitlines()[0]}")]) from None
    if df.height == 0:
        raise ContractError([Problem(name, None, "no data rows")])
    # polars renames a repeated header to '<name>_duplicated_<n>': say so rather than guess which is meant
    dup = [c.rsplit("_duplicated_", 1)[0] for c in df.columns if "_duplicated_" in c and c.rsplit("_duplicated_", 1)[0] in df.columns]
    if dup:
        raise ContractError([Problem(name, dup[0], "duplicate column name in the header")])
    return df


def _read_whitespace(text: str, mapping: Mapping, name: str) -> pl.DataFrame:
    cols = mapping.source.get("columns")
    if not cols:
        raise ContractError([Problem(Path(mapping.origin).name, "source.columns",
                                     "whitespace-separated files need their column names in the mapping")])
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    header = bool(lines) and lines[0] == list(cols)   # a header line, if present, repeats the names
    body = lines[1:] if header else lines
    if not body:
        raise ContractError([Problem(name, None, "no data rows")])
    bad = [i for i, ln in enumerate(body, 2 if header else 1) if len(ln) != len(cols)]
    if bad:
        raise ContractError([Problem(name, None, f"rows with other than {len(cols)} fields", len(bad), tuple(f"line {b}" for b in bad[:3]))])
    df = pl.DataFrame({c: [ln[i] for ln in body] for i, c in enumerate(cols)})
    # infer numbers where every value is one, as a CSV reader would; ids, dates and types stay text
    text = {mapping.id, mapping.timestamp, mapping.event_type}
    return df.with_columns([pl.col(c).cast(pl.Float64) for c in df.columns
                            if c not in text and df[c].cast(pl.Float64, strict=False).null_count() == 0])


def _check_mentioned(df: pl.DataFrame, mapping: Mapping, name: str) -> list[Problem]:
    problems = []
    lower = {c.lower().replace(" ", "").replace("_", ""): c for c in df.columns}
    for col, where in mapping.mentioned_columns().items():
        if col not in df.columns:
            close = lower.get(col.lower().replace(" ", "").replace("_", ""))
            hint = f" (did you mean '{close}'?)" if close else ""
            problems.append(Problem(name, col, f"named in the mapping ({where}) but not in the file{hint}"))
    return problems


def _ids(df: pl.DataFrame, col: str, name: str, unique: bool) -> list[Problem]:
    problems = []
    n = df[col].null_count()
    if n:
        rows = tuple(df.with_row_index("row").filter(pl.col(col).is_null())["row"].head(3).to_list())
        problems.append(Problem(name, col, "null ids (rows shown by position)", n, rows))
    if unique:
        d = df.filter(pl.col(col).is_duplicated() & pl.col(col).is_not_null())[col]
        if d.len():
            problems.append(Problem(name, col, "duplicate ids", d.len(), tuple(dict.fromkeys(d.cast(pl.String).to_list()))[:3]))
    return problems


def _numeric_or_category(s: pl.Series, name: str) -> tuple[pl.Series | None, str, Problem | None]:
    """Infer a column's kind: numbers (text that is all numbers or blanks is read as numbers), categories, or unusable."""
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        x = s.cast(pl.Float64)
        n = int((~x.is_finite() & x.is_not_null()).sum())
        if n:
            ex = tuple(dict.fromkeys(x.filter(~x.is_finite() & x.is_not_null()).to_list()))[:3]
            return None, "", Problem(name, s.name, "NaN or infinite values", n, ex)
        return x, "number", None
    if s.dtype == pl.String:
        stripped = s.str.strip_chars()
        as_num = stripped.cast(pl.Float64, strict=False)
        blank = stripped.is_null() | (stripped == "")
        if as_num.is_not_null().any() and (as_num.is_not_null() | blank).all():
            return as_num.alias(s.name), "number", None  # e.g. Telco TotalCharges: numbers, blank for tenure 0
        if s.n_unique() > _MAX_CATEGORIES:
            return None, "free text", None
        return s, "category", None
    return None, f"type {s.dtype}", None


def _times(s: pl.Series, fmt: str | None, name: str) -> tuple[pl.Series, list[Problem]]:
    """Dates or text dates -> Datetime(us); blanks stay null; text that does not parse is a problem."""
    if s.dtype == pl.Date or isinstance(s.dtype, pl.Datetime):
        return s.cast(pl.Datetime("us")), []
    if not (s.dtype == pl.String or s.dtype.is_numeric() or s.dtype == pl.Null):
        return s, [Problem(name, s.name, f"wrong type {s.dtype}, expected dates or text dates")]
    text = s.cast(pl.String).str.strip_chars().replace("", None)
    parsed = text.str.to_datetime(fmt, strict=False) if fmt else text.str.to_datetime(strict=False)  # one inferred format
    bad = parsed.is_null() & text.is_not_null()
    if bad.any():
        how = f"format {fmt!r}" if fmt else "one date format (mixed formats?)"
        return parsed, [Problem(name, s.name, f"timestamps that do not parse as {how}", int(bad.sum()),
                                tuple(text.filter(bad).head(3).to_list()))]
    return parsed.cast(pl.Datetime("us")), []


def _labels(df: pl.DataFrame, mapping: Mapping, name: str) -> tuple[pl.Series | None, list[Problem]]:
    t = df[mapping.target].cast(pl.String).str.strip_chars()
    pos, neg = set(mapping.positive), set(mapping.negative) if mapping.negative else None
    problems = []
    if t.null_count():
        problems.append(Problem(name, mapping.target, "missing churn labels", t.null_count()))
    if neg is not None:
        unknown = t.filter(~t.is_in(sorted(pos | neg)) & t.is_not_null())
        if unknown.len():
            problems.append(Problem(name, mapping.target, f"unknown labels (positive {sorted(pos)}, negative {sorted(neg)})",
                                    unknown.len(), tuple(dict.fromkeys(unknown.to_list()))[:3]))
    y = t.is_in(sorted(pos)).cast(pl.Int8)
    if not problems and y.n_unique() < 2:
        problems.append(Problem(name, mapping.target, f"the target has one class only ({'all churned' if y[0] else 'no churner'}): nothing to learn"))
    return y, problems


def flat_table(df: pl.DataFrame, mapping: Mapping, *, source: str = "data") -> FeatureTable:
    """One row per customer -> a FeatureTable with one undated snapshot, registry from the mapping."""
    name = Path(source).name
    problems = _check_mentioned(df, mapping, name)
    if problems:
        raise ContractError(problems)
    problems += _ids(df, mapping.id, name, unique=True)
    y, p = _labels(df, mapping, name)
    problems += p
    reserved = {mapping.id, mapping.target}
    dropped = {c: "sensitive: kept out of the model and reports by the mapping" for c in mapping.sensitive}
    cols, feats = {}, []
    for c in df.columns:
        if c in reserved or c in mapping.sensitive:
            continue
        s, kind, prob = _numeric_or_category(df[c], name)
        if prob:
            problems.append(prob)
            continue
        if s is None:
            if c in mapping.mentioned_columns():
                problems.append(Problem(name, c, f"mapped, but not usable as a feature ({kind}: more than {_MAX_CATEGORIES} distinct values)"))
            else:
                dropped[c] = f"{kind}: not usable as a feature (more than {_MAX_CATEGORIES} distinct values)" if kind == "free text" else kind
            continue
        cat = kind == "category"
        allowed = mapping.actionable.get(c)
        if cat:
            seen = sorted(s.drop_nulls().unique().to_list())
            options = tuple(allowed) if allowed else tuple(seen)
            absent = [o for o in options if o not in seen]
            if absent:
                problems.append(Problem(name, c, f"actionable values {absent} named in the mapping never occur"))
            valid = options
        else:
            lo, hi = s.min(), s.max()
            valid = tuple(allowed) if allowed else (None if lo is None else (float(lo), float(hi)))
        cols[c] = s
        feats.append(Feature(c, mapping.pillar_of(c), f"{c} (column of {name})", "category" if cat else "",
                             c in mapping.actionable, valid, int(mapping.directions.get(c, 0)), cat))
    if problems:
        raise ContractError(problems)
    if not feats:
        raise ContractError([Problem(name, None, "no usable feature columns besides the id and the target")])
    frame = pl.DataFrame({"customer_id": df[mapping.id].cast(pl.String), "snapshot_date": [_FLAT_DATE] * df.height,
                          "churned": y, **cols})
    for c in mapping.monthly_value, mapping.customer_value:
        if c and c not in cols:
            frame = frame.with_columns(df[c].cast(pl.Float64, strict=False).alias(c))
    return FeatureTable(frame, FeatureRegistry(tuple(feats)), Snapshots(every="flat", horizon="as labelled", churn="label"),
                        dt.datetime.combine(_FLAT_DATE, dt.time()), dropped)


def event_tables(df: pl.DataFrame, mapping: Mapping, *, source: str = "data", subscriptions: pl.DataFrame | None = None,
                 subscriptions_source: str = "subscriptions"):
    """An event log -> (customers, events, spec, snapshots, as_of): contract tables and a generated feature spec.

    Raw event types map to contract types via [event_types]; others keep their name and pillar
    from [pillars] (default "other") and get count, recency and trend features. With a
    subscriptions table ([subscriptions] file, id, start, end), signup comes from `start`, each
    `end` becomes a cancellation (churn is contractual) and its other columns become attributes.
    """
    name = Path(source).name
    problems = _check_mentioned(df, mapping, name)
    if problems:
        raise ContractError(problems)
    problems += _ids(df, mapping.id, name, unique=False)
    ts, p = _times(df[mapping.timestamp], mapping.timestamp_format, name)
    problems += p
    if mapping.event_type:
        raw_type = df[mapping.event_type].cast(pl.String)
        if raw_type.null_count():
            problems.append(Problem(name, mapping.event_type, "missing event types", raw_type.null_count()))
    else:
        raw_type = pl.Series([mapping.default_type] * df.height, dtype=pl.String)
    value = None
    if mapping.value:
        value = df[mapping.value]
        if not value.dtype.is_numeric():
            v = value.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
            n = int((v.is_null() & value.is_not_null()).sum())
            if n:
                problems.append(Problem(name, mapping.value, "values that are not numbers", n,
                                        tuple(value.filter(v.is_null() & value.is_not_null()).head(3).to_list())))
            value = v
        value = value.cast(pl.Float64)
        n = int((~value.is_finite() & value.is_not_null()).sum())
        if n:
            problems.append(Problem(name, mapping.value, "NaN or infinite values", n))
    as_of = mapping.churn.get("as_of")
    if problems:
        raise ContractError(problems)
    etype = raw_type.replace_strict(mapping.event_types, default=raw_type) if mapping.event_types else raw_type
    events = pl.DataFrame({"customer_id": df[mapping.id].cast(pl.String), "timestamp": ts.cast(pl.Datetime("us")),
                           "event_type": etype, "value": value if value is not None else pl.Series([None] * df.height, dtype=pl.Float64)})
    if as_of:
        as_of = dt.datetime.fromisoformat(str(as_of))
        late = events.filter(pl.col("timestamp") >= as_of)
        if late.height:
            raise ContractError([Problem(name, mapping.timestamp, f"events at or after the as-of date {as_of.date()}", late.height,
                                         tuple(str(t) for t in late["timestamp"].head(3)))])
    events = events.sort("customer_id", "timestamp", "event_type", "value", nulls_last=True)
    attributes: tuple[FeatureSpec, ...] = ()
    if subscriptions is not None:
        customers, cancels, attributes = _subscriptions(subscriptions, mapping, Path(subscriptions_source).name, events, name)
        events = pl.concat([events, cancels], how="vertical").sort("customer_id", "timestamp", "event_type", "value", nulls_last=True)
    else:
        customers = (events.group_by("customer_id").agg(pl.col("timestamp").min().dt.date().alias("signup_date")).sort("customer_id"))
    spec = _event_spec(sorted(events["event_type"].unique().to_list()), mapping, has_value=value is not None) + attributes
    c = mapping.churn
    if "cancellation" in events["event_type"].to_list() and c.get("definition", "cancellation") == "cancellation":
        snaps = Snapshots(every=c.get("every", "1mo"), horizon=c.get("horizon", "1mo"), lead=c.get("lead", "0d"),
                          start=_date(c.get("start")), end=_date(c.get("end")))
    else:
        snaps = Snapshots(every=c.get("every", "1mo"), horizon=c.get("horizon", "90d"), lead=c.get("lead", "0d"),
                          churn="inactivity", active_gap_days=int(c.get("active_gap_days", 365)),
                          start=_date(c.get("start")), end=_date(c.get("end")))
    return customers, events, spec, snaps, (as_of or None)


def _subscriptions(subs: pl.DataFrame, mapping: Mapping, name: str, events: pl.DataFrame, events_name: str):
    """customers (signup = start, plus attribute columns), cancellation events (at `end`) and attribute specs."""
    m = mapping.subscriptions
    sid, start, end = m.get("id", mapping.id), m["start"], m.get("end")
    problems = [Problem(name, c, "named in the mapping (subscriptions) but not in the file")
                for c in (sid, start, end) if c and c not in subs.columns]
    if problems:
        raise ContractError(problems)
    problems += _ids(subs, sid, name, unique=True)
    t0, p0 = _times(subs[start], m.get("date_format"), name)
    problems += p0
    if t0.null_count():
        problems.append(Problem(name, start, "missing start dates", t0.null_count()))
    t1 = None
    if end:
        t1, p1 = _times(subs[end], m.get("date_format"), name)
        problems += p1
        if not p1 and not p0:
            n = int((t1 < t0).fill_null(False).sum())
            if n:
                problems.append(Problem(name, end, "ends before it starts", n))
    ids = subs[sid].cast(pl.String)
    unknown = events.filter(~pl.col("customer_id").is_in(ids.implode()))["customer_id"]
    if unknown.len():
        problems.append(Problem(events_name, mapping.id, f"customer id not in the subscriptions file {name}", unknown.len(),
                                tuple(dict.fromkeys(unknown.head(50).to_list()))[:3]))
    if not p0:
        early = events.join(pl.DataFrame({"customer_id": ids, "_start": t0}), on="customer_id", how="inner").filter(
            pl.col("timestamp") < pl.col("_start"))
        if early.height:
            problems.append(Problem(events_name, mapping.timestamp, f"events before the customer's start in {name}", early.height,
                                    tuple(dict.fromkeys(early["customer_id"].head(50).to_list()))[:3]))
    extra = [c for c in subs.columns if c not in (sid, start, end) and c not in mapping.sensitive]
    if problems:
        raise ContractError(problems)
    customers = pl.DataFrame({"customer_id": ids, "signup_date": t0.dt.date()}).with_columns(subs.select(extra))
    cancels = (pl.DataFrame({"customer_id": ids, "timestamp": t1 if t1 is not None else pl.Series([None] * subs.height, dtype=pl.Datetime("us"))})
               .drop_nulls("timestamp").with_columns(event_type=pl.lit("cancellation"), value=pl.lit(None, dtype=pl.Float64)))
    specs = tuple(FeatureSpec(c, "attribute", pillar=mapping.pillar_of(c) if mapping.pillar_of(c) != "other" else "account",
                              categorical=not subs[c].dtype.is_numeric(), unit="category" if not subs[c].dtype.is_numeric() else None,
                              description=f"{c} (column of {name})") for c in extra)
    return customers.sort("customer_id"), cancels, specs


def _date(v):
    return None if v is None else dt.date.fromisoformat(str(v))


def _event_spec(types: list[str], mapping: Mapping, has_value: bool) -> tuple[FeatureSpec, ...]:
    """The default spec's features the data can feed, plus generated ones for every other event type."""
    covered = {e for s in DEFAULT_SPEC if s.agg != "attribute" for e in s.events}
    spec = [s for s in DEFAULT_SPEC if s.agg == "attribute" and s.events[0] == "tenure_days"]
    spec += [s for s in DEFAULT_SPEC if s.agg != "attribute" and set(s.events) <= set(types)]
    for t in types:
        if t in covered or t == "cancellation":
            continue
        pillar = EVENT_TYPES[t].pillar if t in EVENT_TYPES and mapping.pillar_of(t) == "other" else mapping.pillar_of(t)
        act = t in mapping.actionable
        rng = tuple(mapping.actionable[t]) if act and mapping.actionable[t] else (0.0, 10.0)
        d = int(mapping.directions.get(t, 0))
        spec += [FeatureSpec(t, "count", 90, pillar=pillar, actionable=act, valid_range=rng if act else None, direction=d),
                 FeatureSpec(t, "count", 365, pillar=pillar, direction=d),
                 FeatureSpec(t, "days_since", 365, pillar=pillar, direction=-d),
                 FeatureSpec(t, "trend", 180, pillar=pillar)]
        if has_value:
            spec += [FeatureSpec(t, "sum", 365, pillar=pillar, direction=d), FeatureSpec(t, "mean", 365, pillar=pillar)]
    return tuple(spec)


def value_of(frame: pl.DataFrame, mapping: Mapping | None, monthly_churn: float) -> tuple[np.ndarray, str]:
    """Money at stake per customer, and how it was worked out (printed beside economics)."""
    from trustml.economics import customer_value
    if mapping is not None and mapping.customer_value:
        return frame[mapping.customer_value].cast(pl.Float64).fill_null(0).to_numpy(), f"customer value: column '{mapping.customer_value}'"
    col = mapping.monthly_value if mapping is not None else "monthly_price"
    if col and col in frame.columns:
        return (customer_value(frame[col].cast(pl.Float64).fill_null(0).to_numpy(), monthly_churn),
                f"customer value: '{col}' x expected lifetime (1 / churn rate {monthly_churn:.1%} per label window)")
    return np.full(frame.height, 100.0), "customer value: not in the data; 100 per customer assumed (map one in the mapping)"
