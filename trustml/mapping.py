"""Bring your own data: a mapping file says what each column or event type means in trust terms.

Two kinds of data:

* ``kind = "flat"``: one row per customer with a churn column (like the Telco table);
* ``kind = "events"``: an event log (id, timestamp, type or one fixed type, optional value);
  churn by inactivity, by a cancellation event type, or by the end of subscription periods
  (a ``[subscriptions]`` file with one row per subscription or renewal).

The mapping (TOML or YAML, or the same dict in Python) names the id, target or timestamp
columns, which columns or event types belong to which trust pillar, which are actionable and
what they may be set to, and the customer-value column. Anything not mapped is kept under the
pillar "other", never dropped silently; columns left out on purpose (``sensitive``, ``drop``,
a row number) are listed in the feature table's ``dropped`` with the reason. CSV, whitespace-
separated text, parquet and Excel (.xlsx/.xls) are read; the id column is always read as text
(leading zeros kept); types are inferred, then checked. Every problem names the file, the column
and what is wrong, and nothing is written when there is one. What is odd but not wrong (time
zones converted, duplicate rows, rows left out) goes into a `trustml.contract.DataWarnings`
list passed as ``warnings=``. Input files are only read. `draft_mapping` writes a first mapping
for a file, to edit.

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

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from trustml.contract import ContractError, DataWarnings, Problem
from trustml.features import DEFAULT_SPEC, Feature, FeatureRegistry, FeatureSpec, FeatureTable, Snapshots
from trustml.pillars import EVENT_TYPES, PILLARS

__all__ = ["Mapping", "load_mapping", "read_data", "read_subscriptions", "flat_table", "event_tables", "value_of",
           "draft_mapping", "fill_lever_ranges", "label_warnings", "SHIPPED", "EXCEL_SUFFIXES"]

SHIPPED = Path(__file__).with_name("mappings")
EXCEL_SUFFIXES = (".xlsx", ".xls", ".xlsm", ".xlsb", ".ods")
_MAX_CATEGORIES = 50               # default: a text column with more distinct values is an identifier or free text
_MAX_FEATURES = 500                # default width guard: more usable columns than this need [columns] keep / drop
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_S = (1e8, 4.2e9)            # seconds since 1970 for 1973 .. 2103
_EPOCH_MS = (1e11, 4.2e12)         # the same in milliseconds
_GAP_DAYS = 14                     # default allowed re-signup gap between subscription rows of one active period
_ACT_KEYS = {"min", "max", "step"}


@dataclass(frozen=True)
class Mapping:
    """What the user's columns mean. See the module docstring and `trustml/mappings/*.toml`."""

    kind: str
    id: str | None
    name: str = ""
    target: str | None = None                   # flat: the churn column
    positive: tuple = ("Yes", "yes", "1", "True", "true")   # labels as the file writes them (text, TOML booleans, integers)
    negative: tuple | None = None               # flat: labels meaning "stayed"; if given, any other label is an error
    timestamp: str | None = None                # events
    timestamp_format: str | None = None         # strftime format, or 'epoch_s' / 'epoch_ms'
    event_type: str | None = None               # events: the column, or None when every row is `default_type`
    default_type: str | None = None
    value: str | None = None                    # events: numeric value column
    event_types: dict = field(default_factory=dict)   # raw type -> contract type (e.g. 'Complaint' -> 'ticket_opened')
    pillars: dict = field(default_factory=dict)       # pillar -> [columns or event types]
    actionable: dict = field(default_factory=dict)    # name -> None (data's range) | tuple of allowed values | {min, max, step}
    directions: dict = field(default_factory=dict)    # column -> +1 (more of it raises churn risk) / -1 (lowers it)
    sensitive: tuple[str, ...] = ()                   # columns kept out of the model and reports
    drop: tuple[str, ...] = ()                        # columns left out (not sensitive, just not wanted)
    keep: tuple[str, ...] = ()                        # flat: if given, only these columns (plus id/target/value) are read as features
    rows: dict = field(default_factory=dict)          # flat: {'exclude' | 'keep': {column: [values]}}
    monthly_value: str | None = None                  # column of monthly revenue per customer
    tenure: str | None = None                         # flat: months as a customer (the time axis of time to churn)
    customer_value: str | None = None                 # or: a column/feature with the value at stake, in money
    source: dict = field(default_factory=dict)        # format, separator, header, columns, max_categories, max_features
    churn: dict = field(default_factory=dict)         # events: Snapshots settings, definition, as_of
    subscriptions: dict = field(default_factory=dict)  # events: file, id, start, end, value, gap_days (+ attribute columns)
    model: dict = field(default_factory=dict)          # [model] trials = N: the tuning budget for this data
    origin: str = "<dict>"

    @classmethod
    def from_dict(cls, d: dict, origin: str = "<dict>") -> Mapping:
        problems = []
        where = Path(origin).name

        def bad(key, what):
            problems.append(Problem(where, key, what))

        known = {"name", "kind", "columns", "pillars", "actionable", "directions", "sensitive", "source", "churn",
                 "event_types", "events", "subscriptions", "drop", "rows", "model"}
        for k in d:
            if k not in known:
                bad(k, f"unknown key; expected one of {sorted(known)}")
        model = d.get("model") or {}
        if not isinstance(model, dict) or set(model) - {"trials"}:
            bad("model", "only `trials = N` (Optuna trials to tune LightGBM; 0: no search) is known here")
        elif "trials" in model and not (isinstance(model["trials"], int) and not isinstance(model["trials"], bool) and model["trials"] >= 0):
            bad("model.trials", f"must be a whole number >= 0, got {model['trials']!r}")
        kind = d.get("kind")
        if kind not in ("flat", "events"):
            bad("kind", f"must be 'flat' or 'events', got {kind!r}")
        cols = d.get("columns") or {}
        if not isinstance(cols, dict):
            bad("columns", "must be a table of keys (id, target, ...)")
            cols = {}
        if kind == "events" and not cols.get("id"):
            bad("columns.id", "an event log needs its customer id column")
        if kind == "events" and cols.get("tenure"):
            bad("columns.tenure", "an event log's tenure comes from the first event or subscription; `tenure` is for flat tables")
        if kind == "flat" and not cols.get("target"):
            bad("columns.target", "a flat table needs its churn column")
        if kind == "events" and not cols.get("timestamp"):
            bad("columns.timestamp", "an event log needs its timestamp column")
        fmt = cols.get("timestamp_format")
        if fmt is not None and not isinstance(fmt, str):
            bad("columns.timestamp_format", "must be text: a date format like '%Y-%m-%d', or 'epoch_s' / 'epoch_ms'")
        events = d.get("events") or {}
        if kind == "events" and not cols.get("event_type") and not events.get("type"):
            bad("columns.event_type", "name the event type column, or set [events] type = '...' when every row is one type")
        pillars = d.get("pillars") or {}
        owner: dict[str, str] = {}
        for p, members in pillars.items():
            if p not in PILLARS:
                bad(f"pillars.{p}", f"unknown pillar; choose from {list(PILLARS)}")
            if not isinstance(members, list):
                bad(f"pillars.{p}", "must be a list of column or event-type names")
                continue
            for m in members:
                if m in owner and owner[m] != p:
                    bad(f"pillars.{p}", f"'{m}' is also in pillars.{owner[m]}: a column or event type belongs to one pillar")
                owner.setdefault(m, p)
        act = _parse_actionable(d.get("actionable") or {}, bad)
        dirs = d.get("directions") or {}
        for k, v in dirs.items():
            if v not in (-1, 0, 1) or isinstance(v, bool):
                bad(f"directions.{k}", f"must be -1, 0 or +1 (+1: more of it raises churn risk), got {v!r}")
        subs = d.get("subscriptions") or {}
        if subs and not (subs.get("file") and subs.get("start")):
            bad("subscriptions", "needs `file` and `start` (signup date column); `end` (cancellation date) is optional")
        gap = subs.get("gap_days", _GAP_DAYS)
        if not isinstance(gap, int) or isinstance(gap, bool) or gap < 0:
            bad("subscriptions.gap_days", f"must be a whole number of days >= 0, got {gap!r}")
        churn = d.get("churn") or {}
        if churn.get("definition") not in (None, "cancellation", "inactivity"):
            bad("churn.definition", f"must be 'cancellation' or 'inactivity', got {churn.get('definition')!r}")
        source = d.get("source") or {}
        mc = source.get("max_categories", _MAX_CATEGORIES)
        if not (isinstance(mc, int) and not isinstance(mc, bool) and mc > 0) and not (
                isinstance(mc, dict) and all(isinstance(v, int) and v > 0 for v in mc.values())):
            bad("source.max_categories", f"must be a positive whole number, or a table column = number, got {mc!r}")
        rows = d.get("rows") or {}
        for k, v in rows.items():
            if k not in ("exclude", "keep") or not isinstance(v, dict):
                bad(f"rows.{k}", "expected [rows] exclude = {column = [values]} or keep = {column = [values]}")
        drop = d.get("drop", cols.get("drop", ()))
        for key, v in (("drop", drop), ("columns.keep", cols.get("keep", ())), ("sensitive", d.get("sensitive", ()))):
            if not isinstance(v, list | tuple):
                bad(key, "must be a list of column names")
        if problems:
            raise ContractError(problems)
        pos = cols.get("positive", cls.positive)
        neg = cols.get("negative")
        return cls(kind=kind, id=cols.get("id"), name=d.get("name", ""), target=cols.get("target"),
                   positive=tuple(pos if isinstance(pos, list | tuple) else [pos]),
                   negative=None if neg is None else tuple(neg if isinstance(neg, list | tuple) else [neg]),
                   timestamp=cols.get("timestamp"), timestamp_format=fmt,
                   event_type=cols.get("event_type"), default_type=events.get("type"), value=cols.get("value"),
                   event_types=dict(d.get("event_types") or {}), pillars={p: list(m) for p, m in pillars.items()},
                   actionable=act, directions=dict(dirs), sensitive=tuple(d.get("sensitive") or ()),
                   drop=tuple(drop or ()), keep=tuple(cols.get("keep") or ()),
                   rows={k: {c: list(v) if isinstance(v, list | tuple) else [v] for c, v in r.items()} for k, r in rows.items()},
                   monthly_value=cols.get("monthly_value") or subs.get("value"), customer_value=cols.get("customer_value"),
                   tenure=cols.get("tenure"),
                   source=dict(source), churn=dict(churn), subscriptions=dict(subs), model=dict(d.get("model") or {}),
                   origin=origin)

    def pillar_of(self, name: str) -> str:
        for p, members in self.pillars.items():
            if name in members:
                return p
        return "other"

    def max_categories(self, column: str) -> int:
        """How many distinct values a text column may have and still be a category ([source] max_categories)."""
        mc = self.source.get("max_categories", _MAX_CATEGORIES)
        return int(mc.get(column, mc.get("default", _MAX_CATEGORIES))) if isinstance(mc, dict) else int(mc)

    def mentioned_columns(self) -> dict[str, str]:
        """Column names the mapping refers to, with where it refers to them (for the main data file)."""
        out = {self.id: "columns.id"} if self.id else {}
        for key in ("target", "monthly_value", "customer_value", "tenure", "timestamp", "event_type", "value"):
            if getattr(self, key) and not (key == "monthly_value" and getattr(self, key) == self.subscriptions.get("value")):
                out[getattr(self, key)] = f"columns.{key}"
        if self.kind == "flat":
            for p, members in self.pillars.items():
                out.update({m: f"pillars.{p}" for m in members})
            out.update({a: "actionable" for a in self.actionable})
            out.update({s: "sensitive" for s in self.sensitive})
            out.update({s: "drop" for s in self.drop})
            out.update({s: "columns.keep" for s in self.keep})
            out.update({k: "directions" for k in self.directions})
            out.update({c: f"rows.{k}" for k, r in self.rows.items() for c in r})
        return out


def _parse_actionable(act, bad) -> dict:
    """[actionable] as a list of names, or name -> list of allowed values | {min, max, step}."""
    if isinstance(act, list):
        return {a: None for a in act}
    out = {}
    for k, v in act.items():
        key = f"actionable.{k}"
        if v is None or v == [] or v == {}:
            out[k] = None
        elif isinstance(v, list | tuple):
            if len(set(map(str, v))) < len(v):
                bad(key, "lists a value twice")
            out[k] = tuple(v)
        elif isinstance(v, dict):
            extra = set(v) - _ACT_KEYS
            lo, hi, step = v.get("min"), v.get("max"), v.get("step")
            nums = [x for x in (lo, hi, step) if x is not None]
            if extra:
                bad(key, f"unknown keys {sorted(extra)}: a range is {{min = , max = , step = }}")
            elif lo is None or hi is None:
                bad(key, "a range needs both min and max (and optionally step)")
            elif not all(isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in nums):
                bad(key, f"min, max and step must be finite numbers, got {v!r}")
            elif lo >= hi:
                bad(key, f"min {lo:g} is not below max {hi:g} (reversed range?)")
            elif step is not None and step <= 0:
                bad(key, f"step must be above 0, got {step:g}")
            elif step is not None and abs((hi - lo) / step - round((hi - lo) / step)) > 1e-6:
                bad(key, f"max {hi:g} is not min {lo:g} plus a whole number of steps of {step:g}")
            else:
                out[k] = {"min": float(lo), "max": float(hi), **({"step": float(step)} if step is not None else {})}
        else:
            bad(key, f"must be a list of allowed values or a range {{min = , max = , step = }}, got {v!r}")
    return out


def load_mapping(path_or_name: str | Path) -> Mapping:
    """Read a mapping from TOML or YAML; a bare name ('telco', 'cdnow') is one shipped with trustml."""
    path = Path(path_or_name)
    if not path.exists() and (SHIPPED / f"{path_or_name}.toml").exists():
        path = SHIPPED / f"{path_or_name}.toml"
    if not path.exists():
        shipped = sorted(p.stem for p in SHIPPED.glob("*.toml"))
        raise FileNotFoundError(f"mapping {path_or_name}: no such file (shipped mappings: {shipped})")
    if path.is_dir():
        raise ContractError([Problem(path.name or str(path), None, f"the mapping {path} is a folder; give the mapping file "
                                     "(TOML or YAML) inside it, or a shipped name")])
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ContractError([Problem(path.name, None, f"cannot read the mapping: {e.strerror}")]) from None
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError([Problem(path.name, None, f"not UTF-8 text (byte {e.start})")]) from None
    if "\x00" in text:
        raise ContractError([Problem(path.name, None, "NUL bytes in the mapping: not a text file")])
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
    return Mapping.from_dict(d, origin=str(path.resolve()))   # absolute: found again from another folder (a report's notebooks)


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


def read_data(path: str | Path, mapping: Mapping | None = None, *, id_column: str | None = None,
              warnings: DataWarnings | None = None) -> pl.DataFrame:
    """Read CSV, whitespace-separated text, parquet or Excel as the mapping's [source] says (default: by suffix).

    The id column (`mapping.id`, or `id_column`) is read as text, so '007' stays '007'.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    name = path.name
    if path.is_dir():
        raise ContractError([Problem(name or str(path), None, f"{path} is a folder, not a data file (a simulated world "
                                     "folder is read without --mapping)")])
    source = mapping.source if mapping is not None else {}
    suffix = path.suffix.lower()
    fmt = source.get("format") or ("parquet" if suffix == ".parquet" else "excel" if suffix in EXCEL_SUFFIXES else "csv")
    fmt = "excel" if fmt in ("xlsx", "xls", "xlsm", "xlsb", "ods") else fmt
    id_col = id_column or (mapping.id if mapping is not None else None)
    text_cols = {c: pl.String for c in (id_col,) if c}
    if path.stat().st_size == 0:
        raise ContractError([Problem(name, None, "file is empty")])
    try:
        if fmt == "parquet":
            df = pl.read_parquet(path)
        elif fmt == "excel":
            df = _read_excel(path, source, text_cols, warnings)
        else:
            raw = path.read_bytes()
            if raw[:4] in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"):
                raise ContractError([Problem(name, None, "this is an Excel/zip file, not text: name it .xlsx/.xls, "
                                             "or set [source] format = 'excel'")])
            nul = raw.find(b"\x00")
            if nul >= 0:
                hint = " (UTF-16 text? save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
                line = raw[:nul].count(b"\n") + 1
                raise ContractError([Problem(name, None, f"NUL bytes in the text (line {line}){hint}: "
                                             "not a clean text file; re-export it")])
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
                                 new_columns=source.get("columns"), schema_overrides=text_cols or None)
            else:
                where = Path(mapping.origin).name if mapping is not None else name
                raise ContractError([Problem(where, "source.format", f"unknown format {fmt!r}: csv, whitespace, parquet or excel")])
    except ContractError:
        raise
    except (pl.exceptions.PolarsError, OSError) as e:
        raise ContractError([Problem(name, None, f"cannot read as {fmt}: {str(e).splitlines()[0]}")]) from None
    if df.height == 0:
        raise ContractError([Problem(name, None, "no data rows")])
    # polars renames a repeated header to '<name>_duplicated_<n>': say so rather than guess which is meant
    dup = [c.rsplit("_duplicated_", 1)[0] for c in df.columns if "_duplicated_" in c and c.rsplit("_duplicated_", 1)[0] in df.columns]
    if dup:
        raise ContractError([Problem(name, dup[0], "duplicate column name in the header")])
    problems = _nul_in_text(df, name)
    if problems:
        raise ContractError(problems)
    return df


def _read_excel(path: Path, source: dict, text_cols: dict, warnings: DataWarnings | None) -> pl.DataFrame:
    try:
        import fastexcel  # polars' Excel engine
    except ImportError:
        raise ContractError([Problem(path.name, None, "reading Excel needs the fastexcel package: pip install fastexcel "
                                     "(or save the sheet as CSV)")]) from None
    sheet = source.get("sheet")
    kw = {"sheet_name": sheet} if isinstance(sheet, str) else {"sheet_id": int(sheet) if sheet else 1}
    try:
        sheets = fastexcel.read_excel(path).sheet_names
        if sheet is None and len(sheets) > 1 and warnings is not None:
            warnings.add(path.name, None, f"read the first of {len(sheets)} sheets ({sheets[0]!r}); choose another with "
                         f"[source] sheet = 'name' (sheets: {sheets[:6]})")
        return pl.read_excel(path, engine="calamine", schema_overrides=text_cols or None, **kw)
    except Exception as e:  # fastexcel raises its own exception types (corrupt file, unknown sheet)
        raise ContractError([Problem(path.name, None, f"cannot read as Excel: {str(e).splitlines()[0]}")]) from None


def _nul_in_text(df: pl.DataFrame, name: str) -> list[Problem]:
    """NUL characters inside text values (binary junk or a bad export): an error, never modelled."""
    problems = []
    for c in df.columns:
        if df.schema[c] == pl.String:
            hit = df[c].str.contains("\x00", literal=True).fill_null(False)
            if hit.any():
                problems.append(Problem(name, c, "NUL characters (\\x00) in text values: a corrupted export",
                                        int(hit.sum()), tuple(df[c].filter(hit).head(3).str.replace_all("\x00", "\\x00", literal=True).to_list())))
    return problems


def read_subscriptions(mapping: Mapping, data: str | Path) -> tuple[pl.DataFrame, Path]:
    """The [subscriptions] file of an event-log mapping: found beside the mapping, else beside the data file; id as text."""
    m = mapping.subscriptions
    here = [Path(mapping.origin).parent / m["file"], Path(data).parent / m["file"]]
    path = next((p for p in here if p.exists()), Path(m["file"]))
    if not path.exists():
        raise ContractError([Problem(Path(mapping.origin).name, "subscriptions.file",
                                     f"{m['file']} not found (looked beside the mapping and beside {Path(data).name})")])
    sub_map = dataclasses.replace(mapping, source=dict(m.get("source") or {}))
    return read_data(path, sub_map, id_column=m.get("id", mapping.id)), path


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


def _numeric_or_category(s: pl.Series, name: str, max_categories: int = _MAX_CATEGORIES
                         ) -> tuple[pl.Series | None, str, Problem | None]:
    """Infer a column's kind: numbers (text that is all numbers or blanks is read as numbers), categories, or unusable."""
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        x = s.cast(pl.Float64)
        n = int((~x.is_finite() & x.is_not_null()).sum())
        if n:
            ex = tuple(dict.fromkeys(x.filter(~x.is_finite() & x.is_not_null()).to_list()))[:3]
            return None, "", Problem(name, s.name, "NaN or infinite values", n, ex)
        return _not_huge(x, name)
    if s.dtype == pl.String:
        stripped = s.str.strip_chars()
        as_num = stripped.cast(pl.Float64, strict=False)
        blank = stripped.is_null() | (stripped == "")
        if as_num.is_not_null().any() and (as_num.is_not_null() | blank).all():
            return _not_huge(as_num.alias(s.name), name)  # e.g. Telco TotalCharges: numbers, blank for tenure 0
        n = s.n_unique()
        if n > max_categories:
            return None, f"free text: {n} distinct values, more than the {max_categories} a category may have", None
        return s, "category", None
    if s.dtype == pl.Categorical or isinstance(s.dtype, pl.Enum):
        return _numeric_or_category(s.cast(pl.String), name, max_categories)
    return None, f"type {s.dtype}", None


_HUGE = 1e100  # beyond this, sums and variances overflow float64 (1e308) long before a model sees the column


def _not_huge(x: pl.Series, name: str) -> tuple[pl.Series | None, str, Problem | None]:
    big = x.abs() >= _HUGE
    n = int(big.sum())
    if n:
        ex = tuple(dict.fromkeys(x.filter(big).to_list()))[:3]
        return None, "", Problem(name, x.name, f"numbers too large to compute with (|value| >= {_HUGE:g}: sums and variances "
                                               "overflow); rescale the column (e.g. to thousands) or drop it", n, ex)
    return x, "number", None


def _categories_hint(c: str, kind: str) -> str:
    n = kind.split(": ", 1)[1].split(" ", 1)[0] if kind.startswith("free text:") else "N"
    return (f"to use it as a category, raise the limit in the mapping: [source] max_categories = {n} "
            f"(or per column: max_categories = {{{c} = {n}}}); else list it under drop")


def _whole(x: pl.Series) -> bool:
    """Every non-null value is a whole number (an integer column, or floats like 1.0, 2.0)."""
    if x.dtype.is_integer() or x.dtype == pl.Boolean:
        return True
    v = x.drop_nulls()
    return v.dtype.is_float() and v.len() > 0 and bool((v == v.round(0)).all())


def _row_number_like(s: pl.Series) -> bool:
    """A row number or a per-row serial: 0..n-1 or 1..n in file order (n >= 20), or a unique integer per row (n >= 50)."""
    if not (s.dtype.is_numeric() or s.dtype == pl.String) or s.null_count() or s.len() < 20:
        return False
    x = s.str.strip_chars().cast(pl.Int64, strict=False) if s.dtype == pl.String else s
    if x.null_count() or not _whole(x):
        return False
    x = x.cast(pl.Int64, strict=False)  # whole floats beyond the int64 range (e.g. 1e308) are no row number
    if x.null_count():
        return False
    n = x.len()
    if x[0] in (0, 1) and x.diff().drop_nulls().eq(1).all():
        return True
    return n >= 50 and x.n_unique() == n and (s.dtype.is_integer() or s.dtype == pl.String)


def _epoch(x: pl.Series, unit: str) -> pl.Series:
    return pl.from_epoch(x.cast(pl.Int64), time_unit="s" if unit == "epoch_s" else "ms").cast(pl.Datetime("us")).alias(x.name)


def _times(s: pl.Series, fmt: str | None, name: str, warnings: DataWarnings | None = None, *,
           key: str = "columns.timestamp_format") -> tuple[pl.Series, list[Problem]]:
    """Dates, text dates or epoch numbers -> naive UTC Datetime(us); blanks stay null.

    Text with UTC offsets (+14:00) and zoned datetimes are converted to UTC (a warning says so);
    integers are seconds or milliseconds since 1970 ('epoch_s' / 'epoch_ms', detected by magnitude
    when no format is given); dates before 1970 are an error.
    """
    warnings = warnings if warnings is not None else DataWarnings()
    out, problems = s, []
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone:
        warnings.add(name, s.name, f"time zone {s.dtype.time_zone} converted to UTC (all times are compared in UTC)")
        out = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.Datetime("us"))
    elif s.dtype == pl.Date or isinstance(s.dtype, pl.Datetime):
        out = s.cast(pl.Datetime("us"))
    elif fmt in ("epoch_s", "epoch_ms"):
        x = s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False) if s.dtype == pl.String else s.cast(pl.Float64)
        bad = x.is_null() & s.is_not_null()
        if bad.any():
            return s, [Problem(name, s.name, f"values that are not {fmt} numbers", int(bad.sum()), tuple(s.filter(bad).head(3).to_list()))]
        out = _epoch(x, fmt)
    elif s.dtype.is_numeric() and not fmt:
        x = s.drop_nulls()
        lo, hi = (float(x.min()), float(x.max())) if x.len() else (0.0, 0.0)
        unit = "epoch_s" if _EPOCH_S[0] <= lo and hi <= _EPOCH_S[1] else "epoch_ms" if _EPOCH_MS[0] <= lo and hi <= _EPOCH_MS[1] else None
        if unit is None:
            return s, [Problem(name, s.name, f"numbers, not dates (e.g. {x.head(2).to_list()}): write {key} = 'epoch_s' "
                               "(seconds since 1970), 'epoch_ms' (milliseconds) or a date format like '%Y%m%d' in the mapping")]
        warnings.add(name, s.name, f"numbers read as {'seconds' if unit == 'epoch_s' else 'milliseconds'} since 1970 (UTC); "
                     f"write {key} = '{unit}' to say so")
        out = _epoch(s, unit)
    elif s.dtype == pl.String or s.dtype.is_numeric() or s.dtype == pl.Null:
        text = s.cast(pl.String).str.strip_chars().replace("", None)
        try:
            parsed = text.str.to_datetime(fmt, strict=False) if fmt else text.str.to_datetime(strict=False)  # one inferred format
        except pl.exceptions.PolarsError as e:
            return s, [Problem(name, s.name, f"timestamps that do not parse: {str(e).splitlines()[0]}")]
        bad = parsed.is_null() & text.is_not_null()
        if bad.any():
            how = f"format {fmt!r}" if fmt else "one date format (mixed formats? or mixed time zones)"
            return parsed, [Problem(name, s.name, f"timestamps that do not parse as {how}", int(bad.sum()),
                                    tuple(text.filter(bad).head(3).to_list()))]
        if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone:
            warnings.add(name, s.name, "timestamps with UTC offsets (e.g. +14:00) converted to UTC (all times are compared in UTC)")
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        out = parsed.cast(pl.Datetime("us"))
    else:
        return s, [Problem(name, s.name, f"wrong type {s.dtype}, expected dates or text dates")]
    early = out < _EPOCH
    if early.any():
        problems.append(Problem(name, s.name, "implausible dates before 1970 (a placeholder like 1900-01-01?)", int(early.sum()),
                                tuple(out.filter(early).head(3).cast(pl.String).to_list())))
    return out.alias(s.name), problems


def _too_late(t: pl.Series, limit: dt.datetime, name: str, what: str, limit_name: str) -> list[Problem]:
    late = t > limit
    if not late.any():
        return []
    return [Problem(name, t.name, f"implausible {what} after {limit_name} {limit:%Y-%m-%d}: a placeholder like 2099-12-31, "
                    "or the wrong unit or time zone?", int(late.sum()), tuple(t.filter(late).head(3).cast(pl.String).to_list()))]


def _today() -> dt.datetime:
    return dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time())


def _canon(x) -> str | None:
    """A label as comparable text: 'TRUE', 'true', True and 1 read alike; 1.0 reads as 1; case and spaces do not matter."""
    if x is None:
        return None
    if isinstance(x, bool):
        return "1" if x else "0"
    s = str(x).strip().lower()
    if s in ("true", "false"):
        return "1" if s == "true" else "0"
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if np.isfinite(f) and f == int(f) else s


def _labels(df: pl.DataFrame, mapping: Mapping, name: str) -> tuple[pl.Series | None, list[Problem]]:
    raw = df[mapping.target]
    t = raw.cast(pl.String).str.strip_chars().replace("", None)
    seen = sorted(t.drop_nulls().unique().to_list())
    canon = t.replace_strict({v: _canon(v) for v in seen}, default=None, return_dtype=pl.String) if seen else t
    pos = {_canon(x) for x in mapping.positive}
    neg = {_canon(x) for x in mapping.negative} if mapping.negative is not None else None
    shown = seen[:10] + (["..."] if len(seen) > 10 else [])
    problems = []
    if t.null_count():
        problems.append(Problem(name, mapping.target, "missing churn labels", t.null_count()))
    if neg is not None:
        unknown = t.filter(~canon.is_in(sorted(pos | neg)) & t.is_not_null())
        if unknown.len():
            problems.append(Problem(name, mapping.target, f"unknown labels: neither positive {list(mapping.positive)} nor negative "
                                    f"{list(mapping.negative)} (labels in the file: {shown})",
                                    unknown.len(), tuple(dict.fromkeys(unknown.to_list()))[:3]))
    elif len(seen) != 2:
        problems.append(Problem(name, mapping.target, f"{len(seen)} distinct labels {shown} where a churn column has 2: list the "
                                "churned labels as positive = [...] and the stayed ones as negative = [...], or leave rows out "
                                "with [rows] exclude = {" + f"{mapping.target} = [...]" + "}"))
    elif not pos & {_canon(v) for v in seen}:
        problems.append(Problem(name, mapping.target, f"no label matches positive {list(mapping.positive)} (labels in the file: "
                                f"{shown}): write the churned label as the file writes it"))
    y = canon.is_in(sorted(pos)).cast(pl.Int8)
    if not problems and y.n_unique() < 2:
        problems.append(Problem(name, mapping.target, f"the target has one class only ({'all churned' if y[0] else 'no churner'}): "
                                f"nothing to learn (labels in the file: {shown}; positive {list(mapping.positive)})"))
    return y, problems


def _filter_rows(df: pl.DataFrame, mapping: Mapping, name: str, warnings: DataWarnings) -> pl.DataFrame:
    """[rows] exclude = {col = [values]} / keep = {col = [values]}, matched like labels."""
    if not mapping.rows:
        return df
    mask = pl.Series([True] * df.height)
    for how, conds in mapping.rows.items():
        for c, values in conds.items():
            want = {_canon(v) for v in values}
            col = df[c].cast(pl.String)
            seen = col.drop_nulls().unique().to_list()
            hit = col.replace_strict({v: _canon(v) in want for v in seen}, default=False, return_dtype=pl.Boolean) if seen else \
                pl.Series([False] * df.height)
            never = [v for v in values if _canon(v) not in {_canon(s) for s in seen}]
            if never:
                warnings.add(name, c, f"[rows] {how} values {never} never occur in the column")
            mask = mask & (~hit if how == "exclude" else hit)
    n = df.height - int(mask.sum())
    if n:
        warnings.add(name, None, f"{n} of {df.height} rows left out by the mapping's [rows]", n)
    out = df.filter(mask)
    if out.height == 0:
        raise ContractError([Problem(name, None, "no rows left after the mapping's [rows] keep / exclude")])
    return out


def _numeric_lever(c: str, s: pl.Series, allowed, whole: bool, name: str) -> tuple[dict, Problem | None]:
    """Feature fields (valid_range, values, step, integer) of a numeric actionable column; a problem if the mapping's
    values do not fit the column."""
    lo, hi = s.min(), s.max()
    binary = whole and set(s.drop_nulls().unique().to_list()) <= {0.0, 1.0}
    if isinstance(allowed, tuple):
        try:
            vals = tuple(sorted(float(v) for v in allowed))
        except (TypeError, ValueError):
            return {}, Problem(name, c, f"actionable values {list(allowed)} are not numbers, but the column is numeric")
        if whole and any(v != int(v) for v in vals):
            return {}, Problem(name, c, f"the column holds whole numbers; actionable values {list(allowed)} are not all whole")
        return {"valid_range": (vals[0], vals[-1]), "values": vals, "integer": whole}, None
    if isinstance(allowed, dict):
        step = allowed.get("step") or (1.0 if whole else None)
        if whole and (allowed["min"] != int(allowed["min"]) or step != int(step)):
            return {}, Problem(name, c, f"the column holds whole numbers; actionable range {allowed} is not whole")
        return {"valid_range": (allowed["min"], allowed["max"]), "step": step, "integer": whole}, None
    if lo is None:
        return {"valid_range": None}, None
    if binary:
        return {"valid_range": (0.0, 1.0), "values": (0.0, 1.0), "integer": True}, None
    return {"valid_range": (float(lo), float(hi)), "step": 1.0 if whole else None, "integer": whole}, None


def flat_table(df: pl.DataFrame, mapping: Mapping, *, source: str = "data", warnings: DataWarnings | None = None) -> FeatureTable:
    """One row per customer -> a FeatureTable with one undated snapshot (``snapshot_date`` null, `as_of` None), registry
    from the mapping.

    No id column: each row gets a pseudonymous 'row-<n>' id (its line in the file), never a feature.
    An unmapped row-number-like column is left out (listed in `dropped`). Odd but legal things go
    into `warnings` (a `DataWarnings`).
    """
    name = Path(source).name
    warnings = warnings if warnings is not None else DataWarnings()
    problems = _check_mentioned(df, mapping, name)
    if problems:
        raise ContractError(problems)
    mentioned = mapping.mentioned_columns()
    reserved = {c for c in (mapping.id, mapping.target) if c}
    left_out = set(mapping.sensitive) | set(mapping.drop)
    candidates = [c for c in df.columns if c not in reserved and c not in left_out and (not mapping.keep or c in mentioned)]
    limit = int(mapping.source.get("max_features", _MAX_FEATURES))
    if len(candidates) > limit:
        raise ContractError([Problem(name, None, f"{len(candidates)} candidate feature columns, more than the {limit} this "
                                     "reads without being told: choose them with [columns] keep = [...] or leave some out "
                                     "with drop = [...] in the mapping (or raise [source] max_features)")])
    dropped = {c: "sensitive: kept out of the model and reports by the mapping" for c in mapping.sensitive}
    dropped |= {c: "left out by the mapping (drop)" for c in mapping.drop}
    if mapping.keep:
        dropped |= {c: "not in the mapping's [columns] keep" for c in df.columns if c not in reserved | left_out and c not in mentioned}
    # row numbers (in the file's own order, before any row is left out) are never features
    for c in list(candidates):
        if c not in mentioned and _row_number_like(df[c]):
            candidates.remove(c)
            dropped[c] = "a row number or per-row serial (one distinct integer per row): not a feature; map it as columns.id if it is the id"
    df = df.with_row_index("__row", offset=1)
    df = _filter_rows(df, mapping, name, warnings)
    if mapping.id:
        problems += _ids(df, mapping.id, name, unique=True)
        ids = df[mapping.id].cast(pl.String)
    else:
        ids = pl.format("row-{}", pl.col("__row")).alias("id")
        ids = df.select(ids)["id"]
        warnings.add(name, None, "no id column in the mapping: rows are numbered row-1, row-2, ... by their line in the file "
                     "(pseudonymised like any id, never a feature)")
    y, p = _labels(df, mapping, name)
    problems += p
    cols, feats = {}, []
    for c in candidates:
        s, kind, prob = _numeric_or_category(df[c], name, mapping.max_categories(c))
        if prob:
            problems.append(prob)
            continue
        if s is None:
            hint = f"; {_categories_hint(c, kind)}" if kind.startswith("free text") else ""
            if c in mentioned:
                problems.append(Problem(name, c, f"mapped ({mentioned[c]}), but not usable as a feature ({kind}){hint}"))
            else:
                dropped[c] = f"{kind}: not usable as a feature{hint}"
            continue
        cat = kind == "category"
        allowed = mapping.actionable.get(c)
        lever: dict = {}
        if cat:
            seen = sorted(s.drop_nulls().unique().to_list())
            if isinstance(allowed, dict):
                problems.append(Problem(name, c, "a text column takes a list of allowed values, not a {min, max} range"))
                continue
            options = tuple(str(a) for a in allowed) if allowed else tuple(seen)
            absent = [o for o in options if o not in seen]
            if absent:
                problems.append(Problem(name, c, f"actionable values {absent} named in the mapping never occur (values: {seen[:10]})"))
            lever = {"valid_range": options}
        else:
            lever, prob = _numeric_lever(c, s, allowed if c in mapping.actionable else None, _whole(df[c].cast(pl.Float64, strict=False)
                                         if df[c].dtype == pl.String else df[c]), name)
            if prob:
                problems.append(prob)
                continue
        cols[c] = s
        feats.append(Feature(c, mapping.pillar_of(c), f"{c} (column of {name})", "category" if cat else "",
                             c in mapping.actionable, lever.pop("valid_range"), int(mapping.directions.get(c, 0)), cat, **lever))
    if problems:
        raise ContractError(problems)
    if not feats:
        raise ContractError([Problem(name, None, "no usable feature columns besides the id and the target")])
    # one undated "snapshot": the date is null (never an invented 1970-01-01 that outputs would show)
    frame = pl.DataFrame({"customer_id": ids, "snapshot_date": pl.Series([None] * df.height, dtype=pl.Date), "churned": y, **cols})
    for c in mapping.monthly_value, mapping.customer_value, mapping.tenure:
        if c and c not in cols and c not in frame.columns:
            frame = frame.with_columns(df[c].cast(pl.Float64, strict=False).alias(c))
    return FeatureTable(frame, FeatureRegistry(tuple(feats)), Snapshots(every="flat", horizon="as labelled", churn="label"),
                        None, dropped)


def event_tables(df: pl.DataFrame, mapping: Mapping, *, source: str = "data", subscriptions: pl.DataFrame | None = None,
                 subscriptions_source: str = "subscriptions", warnings: DataWarnings | None = None):
    """An event log -> (customers, events, spec, snapshots, as_of): contract tables and a generated feature spec.

    Raw event types map to contract types via [event_types]; others keep their name and pillar
    from [pillars] (default "other") and get count, recency and trend features. With a
    subscriptions table ([subscriptions] file, id, start, end, value, gap_days), rows of one
    customer (one per subscription or renewal) merge into active periods when the next starts
    within `gap_days` of the last end; signup is the first start, the end of a period before the
    as-of date is a cancellation, an end at or after it is right-censored (still active); plan or
    value changes between rows become 'plan_change' events; other columns become attributes
    (their value at signup). Odd but legal things (time zones converted, duplicate rows,
    censored periods) go into `warnings`.
    """
    name = Path(source).name
    warnings = warnings if warnings is not None else DataWarnings()
    problems = _check_mentioned(df, mapping, name)
    if problems:
        raise ContractError(problems)
    problems += _ids(df, mapping.id, name, unique=False)
    ts, p = _times(df[mapping.timestamp], mapping.timestamp_format, name, warnings)
    problems += p
    if not p and ts.null_count():
        rows = tuple(pl.Series(ts.is_null()).arg_true().head(3).to_list())
        problems.append(Problem(name, mapping.timestamp, "missing timestamps (rows shown by position)", ts.null_count(), rows))
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
        n = int((value.abs() >= _HUGE).sum())
        if n:
            problems.append(Problem(name, mapping.value, f"numbers too large to compute with (|value| >= {_HUGE:g}); rescale them", n))
    as_of = mapping.churn.get("as_of")
    if as_of is not None:
        try:
            as_of = as_of if isinstance(as_of, dt.datetime) else dt.datetime.fromisoformat(str(as_of))
        except ValueError:
            problems.append(Problem(Path(mapping.origin).name, "churn.as_of", f"not a date: {as_of!r} (write 2024-06-30)"))
            as_of = None
    if problems:
        raise ContractError(problems)
    etype = raw_type.replace_strict(mapping.event_types, default=raw_type) if mapping.event_types else raw_type
    events = pl.DataFrame({"customer_id": df[mapping.id].cast(pl.String), "timestamp": ts.cast(pl.Datetime("us")),
                           "event_type": etype, "value": value if value is not None else pl.Series([None] * df.height, dtype=pl.Float64)})
    if as_of:
        late = events.filter(pl.col("timestamp") >= as_of)
        if late.height:
            raise ContractError([Problem(name, mapping.timestamp, f"events at or after the as-of date {as_of.date()}", late.height,
                                         tuple(late["timestamp"].head(3).cast(pl.String).to_list()))])
    else:
        late = _too_late(events["timestamp"].alias(mapping.timestamp), _today(), name, "timestamps", "today")
        if late:
            raise ContractError(late)
    n_dup = events.height - events.n_unique()
    if n_dup:
        warnings.add(name, None, f"{n_dup} event rows repeat another row exactly (same customer, time, type and value): kept, "
                     "as two purchases on one day are real; remove them from the file if they are copies", n_dup)
    types_seen = set(etype.unique().to_list())
    for p_name, members in mapping.pillars.items():
        absent = [m for m in members if m not in types_seen and m not in (subscriptions.columns if subscriptions is not None else ())]
        if absent:
            warnings.add(Path(mapping.origin).name, f"pillars.{p_name}", f"event types {absent} never occur in {name}")
    attributes: tuple[FeatureSpec, ...] = ()
    out_as_of = as_of
    c = mapping.churn
    definition = c.get("definition")
    if subscriptions is not None and definition == "inactivity":
        warnings.add(Path(mapping.origin).name, "churn.definition", "[churn] definition = 'inactivity' with a [subscriptions] file: "
                     "churn is no event within the horizon, and subscription ends are not used; remove the definition to make "
                     "churn the end of an active subscription period")
    if subscriptions is not None:
        out_as_of = as_of or (events["timestamp"].max() + dt.timedelta(microseconds=1))
        customers, extra, attributes = _subscriptions(subscriptions, mapping, Path(subscriptions_source).name, events, name,
                                                      out_as_of, warnings)
        events = pl.concat([events, extra], how="vertical").sort("customer_id", "timestamp", "event_type", "value", nulls_last=True)
    else:
        events = events.sort("customer_id", "timestamp", "event_type", "value", nulls_last=True)
        customers = (events.group_by("customer_id").agg(pl.col("timestamp").min().dt.date().alias("signup_date")).sort("customer_id"))
    has_cancel = "cancellation" in events["event_type"].unique().to_list()
    if definition != "inactivity" and (definition == "cancellation" or subscriptions is not None) and not has_cancel:
        if subscriptions is not None:
            where = Problem(Path(subscriptions_source).name, mapping.subscriptions.get("end"),
                            f"churn is the end of a subscription, but no subscription period ends before the as-of date "
                            f"{out_as_of:%Y-%m-%d} (every end is at or after it, or empty): nothing to learn churn from; "
                            "set [churn] definition = 'inactivity' to define churn by inactivity instead")
        else:
            where = Problem(name, mapping.event_type or "churn.definition",
                            f"[churn] definition = 'cancellation', but no event is a 'cancellation' (types: {sorted(types_seen)[:8]}): "
                            "map yours with [event_types] YourCancelType = 'cancellation', or set definition = 'inactivity'")
        raise ContractError([where])
    spec = _event_spec(sorted(events["event_type"].unique().to_list()), mapping, has_value=value is not None) + attributes
    if has_cancel and definition != "inactivity":
        snaps = Snapshots(every=c.get("every", "1mo"), horizon=c.get("horizon", "1mo"), lead=c.get("lead", "0d"),
                          start=_date(c.get("start")), end=_date(c.get("end")))
    else:
        snaps = Snapshots(every=c.get("every", "1mo"), horizon=c.get("horizon", "90d"), lead=c.get("lead", "0d"),
                          churn="inactivity", active_gap_days=int(c.get("active_gap_days", 365)),
                          start=_date(c.get("start")), end=_date(c.get("end")))
    return customers, events, spec, snaps, (out_as_of or None)


_STATUS_NAMES = ("status", "churn", "churned", "cancelled", "canceled", "cancel_reason", "end_reason", "is_active", "active",
                 "state_of_subscription", "subscription_status", "outcome")


def _subscriptions(subs: pl.DataFrame, mapping: Mapping, name: str, events: pl.DataFrame, events_name: str,
                   as_of: dt.datetime, warnings: DataWarnings):
    """customers (signup = first start, attributes at signup), cancellation and plan_change events, attribute specs."""
    m = mapping.subscriptions
    sid, start, end, vcol = m.get("id", mapping.id), m["start"], m.get("end"), m.get("value")
    gap = int(m.get("gap_days", _GAP_DAYS))
    problems = [Problem(name, c, "named in the mapping (subscriptions) but not in the file")
                for c in (sid, start, end, vcol) if c and c not in subs.columns]
    if problems:
        raise ContractError(problems)
    problems += _ids(subs, sid, name, unique=False)
    t0, p0 = _times(subs[start], m.get("date_format"), name, warnings, key="subscriptions.date_format")
    problems += p0
    if not p0 and t0.null_count():
        problems.append(Problem(name, start, "missing start dates", t0.null_count()))
    if not p0:
        problems += _too_late(t0, _today(), name, "start dates", "today")
    t1 = pl.Series(end or "_end", [None] * subs.height, dtype=pl.Datetime("us"))
    if end:
        t1, p1 = _times(subs[end], m.get("date_format"), name, warnings, key="subscriptions.date_format")
        problems += p1
        if not p1 and not p0:
            n = int((t1 < t0).fill_null(False).sum())
            if n:
                problems.append(Problem(name, end, "ends before it starts", n))
    money = None
    if vcol:
        money = subs[vcol] if subs[vcol].dtype.is_numeric() else subs[vcol].cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        bad = (money.is_null() & subs[vcol].is_not_null()) | ~money.cast(pl.Float64).is_finite().fill_null(True)
        if bad.any():
            problems.append(Problem(name, vcol, "values that are not finite numbers", int(bad.sum()),
                                    tuple(subs[vcol].filter(bad).head(3).to_list())))
        money = money.cast(pl.Float64)
    ids = subs[sid].cast(pl.String)
    known = ids.unique()
    unknown = events.filter(~pl.col("customer_id").is_in(known.implode()))["customer_id"]
    if unknown.len():
        problems.append(Problem(events_name, mapping.id, f"customer id not in the subscriptions file {name}", unknown.len(),
                                tuple(dict.fromkeys(unknown.head(50).to_list()))[:3]))
    if not p0:   # against each customer's first start: one row per customer, whatever the number of renewals
        firsts = pl.DataFrame({"customer_id": ids, "_first": t0}).group_by("customer_id").agg(pl.col("_first").min())
        early = (events.select("customer_id", "timestamp").join(firsts, on="customer_id", how="inner")
                 .filter(pl.col("timestamp") < pl.col("_first")))
        if early.height:
            problems.append(Problem(events_name, mapping.timestamp, f"events before the customer's start in {name}", early.height,
                                    tuple(dict.fromkeys(early["customer_id"].head(50).to_list()))[:3]))
    left_out = set(mapping.sensitive) | set(mapping.drop)
    extra = [c for c in subs.columns if c not in (sid, start, end, vcol) and c not in left_out]
    if problems:
        raise ContractError(problems)
    rows = (pl.DataFrame({"customer_id": ids, "_start": t0, "_end": t1.cast(pl.Datetime("us"))})
            .with_columns(*subs.select(extra).get_columns(), *([money.alias(vcol)] if vcol else []))
            .with_row_index("_line").sort("customer_id", "_start", "_line"))
    far = dt.datetime(9999, 12, 31)
    rows = rows.with_columns(_endf=pl.col("_end").fill_null(far))
    rows = rows.with_columns(_prev=pl.col("_endf").cum_max().shift(1).over("customer_id"))
    rows = rows.with_columns(_period=(pl.col("_prev").is_null() | (pl.col("_start") > pl.col("_prev") + pl.duration(days=gap)))
                             .cast(pl.Int32).cum_sum().over("customer_id"))
    periods = rows.group_by("customer_id", "_period").agg(pl.col("_start").min(), pl.col("_endf").max()).sort("customer_id", "_period")
    ended = periods.filter(pl.col("_endf") < as_of)
    censored = periods.filter((pl.col("_endf") >= as_of) & (pl.col("_endf") < far)).height
    if censored:
        warnings.add(name, end, f"{censored} subscription periods end at or after the as-of date {as_of:%Y-%m-%d}: right-censored "
                     "(still active, the next renewal is not known yet), not cancellations", censored)
    back = periods.filter(pl.col("_period") > 1)["customer_id"].n_unique()
    if back:
        warnings.add(name, start, f"{back} customers came back after a gap longer than gap_days = {gap}: churn is the end of "
                     "their first active period (a customer is followed until their first churn)", back)
    cancels = ended.select("customer_id", pl.col("_endf").alias("timestamp"), event_type=pl.lit("cancellation"),
                           value=pl.lit(None, dtype=pl.Float64))
    # plan or price changes between consecutive rows of a customer: events (point in time), not attributes
    watched = [c for c in extra if not subs[c].dtype.is_numeric()] + ([vcol] if vcol else [])
    changed = pl.lit(False)
    for c in watched:
        changed = changed | pl.col(c).ne_missing(pl.col(c).shift(1).over("customer_id"))
    first = pl.col("_start") == pl.col("_start").first().over("customer_id")
    delta = (pl.col(vcol) - pl.col(vcol).shift(1).over("customer_id")) if vcol else pl.lit(None, dtype=pl.Float64)
    plan_changes = (rows.with_columns(_chg=changed & ~first, _delta=delta).filter(pl.col("_chg") & (pl.col("_start") < as_of))
                    .select("customer_id", pl.col("_start").alias("timestamp"), event_type=pl.lit("plan_change"),
                            value=pl.col("_delta").cast(pl.Float64)))
    # leaks: a column whose last value tells churned from active customers is the outcome, not a signal
    last = rows.group_by("customer_id").agg(pl.all().last())   # rows are sorted by customer and start
    churned = last.join(ended.select("customer_id").unique().with_columns(_churned=pl.lit(True)), on="customer_id", how="left"
                        ).with_columns(pl.col("_churned").fill_null(False))
    for c in extra:
        if churned[c].n_unique() < 2 or churned[c].n_unique() > 12 or churned["_churned"].n_unique() < 2:
            if c.lower() in _STATUS_NAMES:
                warnings.add(name, c, "named like a status or outcome column: if it says whether the customer left, it leaks the "
                             "label; list it under drop")
            continue
        by = churned.group_by(c).agg(pl.col("_churned").sum().alias("k"), pl.len().alias("n"))
        accuracy = float((by["k"].zip_with(by["k"] > by["n"] - by["k"], by["n"] - by["k"])).sum()) / churned.height
        n_churned = int(churned["_churned"].sum())
        if accuracy >= 0.98 and (c.lower() in _STATUS_NAMES or min(n_churned, churned.height - n_churned) >= 10):
            problems.append(Problem(name, c, f"LEAK: the customer's last '{c}' alone tells churned from active customers "
                                    f"({accuracy:.1%} right): it encodes the outcome; list it under drop = ['{c}'] in the mapping"))
    if problems:
        raise ContractError(problems)
    firsts = rows.group_by("customer_id", maintain_order=True).agg(pl.all().first())
    customers = firsts.select("customer_id", pl.col("_start").dt.date().alias("signup_date"), *extra, *([vcol] if vcol else []))
    attrs = extra + ([vcol] if vcol else [])
    specs = tuple(FeatureSpec(c, "attribute", pillar=mapping.pillar_of(c) if mapping.pillar_of(c) != "other" else "account",
                              categorical=not customers[c].dtype.is_numeric(), unit="category" if not customers[c].dtype.is_numeric() else None,
                              description=f"{c} at signup (column of {name})") for c in attrs)
    return customers, pl.concat([cancels, plan_changes], how="vertical"), specs


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
        if t == "plan_change" and pillar == "other":
            pillar = "account"
        act = t in mapping.actionable
        decl = mapping.actionable.get(t)
        rng = ((decl["min"], decl["max"]) if isinstance(decl, dict) else (min(map(float, decl)), max(map(float, decl))) if decl
               else None)   # None: the data's observed range, filled in by `fill_lever_ranges`
        d = int(mapping.directions.get(t, 0))
        spec += [FeatureSpec(t, "count", 90, pillar=pillar, actionable=act, valid_range=rng if act else None, direction=d),
                 FeatureSpec(t, "count", 365, pillar=pillar, direction=d),
                 FeatureSpec(t, "days_since", 365, pillar=pillar, direction=-d),
                 FeatureSpec(t, "trend", 180, pillar=pillar)]
        if has_value:
            spec += [FeatureSpec(t, "sum", 365, pillar=pillar, direction=d), FeatureSpec(t, "mean", 365, pillar=pillar)]
    return tuple(spec)


def fill_lever_ranges(table: FeatureTable, mapping: Mapping | None = None) -> FeatureTable:
    """The table with every numeric lever's allowed values settled: the mapping's list or {min, max, step}, else the
    data's observed range; counts and whole-number columns stay whole. Call it after `build_features` on an event log.

    Example
    -------
    >>> import datetime as dt
    >>> reg = FeatureRegistry((Feature("visits", "engagement", "", "", True, None, 0, False, integer=True),))
    >>> t = FeatureTable(pl.DataFrame({"visits": [0.0, 3.0, 48.0]}), reg, Snapshots(), dt.datetime(2024, 1, 1))
    >>> f = fill_lever_ranges(t).registry["visits"]
    >>> f.valid_range, f.step
    ((0.0, 48.0), 1.0)
    """
    seen: set[str] = set()
    out = []
    for f in table.registry:
        signal = f.name.split("__")[0]
        if not f.actionable or f.categorical:
            out.append(f)
            continue
        primary = signal not in seen
        seen.add(signal)
        col = table.frame[f.name] if f.name in table.frame.columns else pl.Series([], dtype=pl.Float64)
        whole = f.integer or (col.len() > 0 and _whole(col))
        decl = mapping.actionable.get(signal) if mapping is not None and primary else None
        if isinstance(decl, tuple):
            vals = tuple(sorted(float(v) for v in decl))
            f = dataclasses.replace(f, valid_range=(vals[0], vals[-1]), values=vals, integer=whole)
        elif isinstance(decl, dict):
            f = dataclasses.replace(f, valid_range=(decl["min"], decl["max"]), step=decl.get("step") or (1.0 if whole else None),
                                    integer=whole)
        elif f.valid_range is None and f.values is None:
            lo, hi = col.min(), col.max()
            if lo is None:
                out.append(dataclasses.replace(f, actionable=False))   # never observed: nothing to move
                continue
            f = dataclasses.replace(f, valid_range=(float(lo), float(hi)), step=1.0 if whole else f.step, integer=whole)
        else:
            f = dataclasses.replace(f, step=f.step or (1.0 if whole and primary else None), integer=whole)
        out.append(f)
    return dataclasses.replace(table, registry=FeatureRegistry(tuple(out)))


def label_warnings(table: FeatureTable, warnings: DataWarnings | None = None, *, factor: float = 3.0, last: int = 2) -> DataWarnings:
    """Warn when the churn rate of one of the `last` labelled snapshots is above `factor` x the median snapshot rate.

    A jump like that is usually a definition problem (e.g. future renewal dates read as cancellations),
    not a change in customers: it is reported, not silently modelled.
    """
    warnings = warnings if warnings is not None else DataWarnings()
    if table.is_flat:
        return warnings
    rates = (table.labelled().group_by("snapshot_date").agg(pl.col("churned").mean().alias("rate"), pl.len().alias("n"))
             .sort("snapshot_date"))
    if rates.height < 4:
        return warnings
    med = float(rates["rate"].median())
    for d, r in zip(rates["snapshot_date"][-last:], rates["rate"][-last:], strict=True):
        if r > factor * med and r - med > 0.02:
            warnings.add("labels", "churned", f"the churn rate of the snapshot {d} is {r:.1%}, over {factor:g}x the median snapshot "
                         f"rate {med:.1%}: check the churn definition (an end date at or after the as-of date is not a cancellation; "
                         "a label window that runs past the data's end reads as churn) before trusting the model")
    return warnings


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


# -- drafting a mapping from a file ----------------------------------------------------------------

_PILLAR_WORDS = {
    "service_quality": ("support", "ticket", "complain", "tech", "issue", "resolution", "outage", "csat", "security", "serv",
                        "protection", "backup", "repair", "incident", "bug"),
    "empathy": ("empathy", "agent", "courtesy", "tone"),
    "promises": ("contract", "commit", "sla", "deliver", "late", "promise", "guarantee", "delay"),
    "transparency": ("bill", "paperless", "payment", "fee", "invoice", "surcharge", "price_change", "refund"),
    "respect_for_time": ("email", "call", "contact", "marketing", "sms", "newsletter", "push", "campaign"),
    "advocacy": ("referr", "review", "nps", "recommend", "rating"),
    "engagement": ("usage", "login", "session", "stream", "visit", "active", "product", "minutes", "use", "purchase",
                   "order", "click", "view", "download", "watch"),
    "account": ("tenure", "weeks", "months", "years", "seniority", "balance", "salary", "monthly", "total", "plan", "price", "mrr",
                "credit", "geography",
                "country", "state", "region", "city", "tier", "segment", "charge", "amount", "spend", "revenue"),
}
_SENSITIVE_WORDS = ("gender", "sex", "age", "race", "ethnic", "religion", "marital", "senior", "dependents", "partner",
                    "birth", "nationality", "disab")
_TARGET_WORDS = ("churn", "exited", "attrition", "left", "cancel", "target", "label", "is_lost", "lost", "status", "retained")
_POSITIVE_WORDS = ("yes", "y", "1", "true", "churned", "churn", "exited", "left", "cancelled", "canceled", "lost", "attrited customer",
                   "closed", "terminated", "inactive")
_NEGATIVE_WORDS = ("no", "n", "0", "false", "stayed", "retained", "active", "existing customer", "current", "open", "renewed",
                   "not churned", "loyal")
_ID_WORDS = ("id", "customer", "account", "user", "client", "member", "subscriber")


def _norm(c: str) -> str:
    return c.lower().replace(" ", "_").replace("-", "_")


def _guess_pillar(c: str, values: list) -> str:
    text = _norm(c) + " " + " ".join(str(v).lower() for v in values[:20])
    for p, words in _PILLAR_WORDS.items():
        if any(w in _norm(c) for w in words):
            return p
    for p, words in _PILLAR_WORDS.items():   # then the values (e.g. 'Month-to-month' -> a contract)
        if any(w in text for w in words if len(w) > 4):
            return p
    return "other"


def _as_dates(s: pl.Series) -> pl.Series | None:
    if s.dtype == pl.Date or isinstance(s.dtype, pl.Datetime):
        return s
    if s.dtype == pl.String:
        try:
            parsed = s.str.strip_chars().str.to_datetime(strict=False)
        except pl.exceptions.PolarsError:
            return None
        return parsed if parsed.is_not_null().sum() >= 0.9 * max(1, s.drop_nulls().len()) and parsed.is_not_null().any() else None
    return None


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of a score against a 0/1 label (rank based, ties averaged)."""
    from scipy.stats import rankdata
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return 0.5
    r = rankdata(x)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _leak_notes(df: pl.DataFrame, target: str, positive: str, skip: set[str]) -> list[str]:
    """Columns that alone almost separate the target (or whose missingness does): likely recorded after the churn."""
    y = (df[target].cast(pl.String).str.strip_chars().map_elements(_canon, return_dtype=pl.String) == _canon(positive)).fill_null(False)
    y = y.cast(pl.Int8).to_numpy()
    notes = []
    for c in df.columns:
        if c in skip or c == target:
            continue
        s = df[c]
        miss = s.is_null().to_numpy().astype(float)
        if 0 < miss.mean() < 1:
            a = _auc(miss, y)
            if max(a, 1 - a) >= 0.9:
                notes.append(f"{c}: whether it is blank alone separates churned from stayed (AUC {max(a, 1 - a):.2f})")
                continue
        x, kind, _ = _numeric_or_category(s, "", 200)
        if x is None:
            continue
        if kind == "number":
            ok = x.is_not_null().to_numpy()
            a = _auc(x.to_numpy()[ok], y[ok]) if ok.sum() > 10 else 0.5
        else:
            k = pl.DataFrame({"v": x, "y": y}).group_by("v").agg(pl.col("y").mean().alias("m"))
            a = _auc(pl.DataFrame({"v": x}).join(k, on="v", how="left", maintain_order="left")["m"].to_numpy(), y)
        if max(a, 1 - a) >= 0.95:
            notes.append(f"{c}: alone separates churned from stayed (AUC {max(a, 1 - a):.2f}); recorded after the churn?")
    return notes


def _split_labels(s: pl.Series) -> tuple[str, list[str], list[str]] | None:
    """(churned label, stayed labels, other labels) of a churn-like column read by the words its values use, or None."""
    vals = sorted(s.drop_nulls().cast(pl.String).unique().to_list())
    pos = [v for v in vals if v.strip().lower() in _POSITIVE_WORDS]
    neg = [v for v in vals if v.strip().lower() in _NEGATIVE_WORDS and v not in pos]
    if len(pos) != 1 or not neg:
        return None
    return pos[0], neg, [v for v in vals if v not in pos and v not in neg]


def _direction_hints(df: pl.DataFrame, target: str, positive: str, skip: set[str], limit: int = 8) -> list[str]:
    """Commented `[directions]` lines for numeric columns whose values alone rank churners (AUC >= 0.55), strongest first."""
    y = (df[target].cast(pl.String).str.strip_chars().map_elements(_canon, return_dtype=pl.String) == _canon(positive)).fill_null(False)
    known = df[target].cast(pl.String).is_not_null()
    y = y.filter(known).cast(pl.Int8).to_numpy()
    out = []
    for c in df.columns:
        if c in skip or c == target or _row_number_like(df[c]):
            continue
        x, kind, _ = _numeric_or_category(df[c], "", _MAX_CATEGORIES)
        if x is None or kind != "number":
            continue
        v = x.filter(known).to_numpy()
        ok = np.isfinite(v)
        if ok.sum() < 20 or np.unique(v[ok]).size < 2:
            continue
        a = _auc(v[ok], y[ok])
        if max(a, 1 - a) >= 0.55:
            out.append((max(a, 1 - a), c, 1 if a > 0.5 else -1))
    return [f"# {c} = {d:+d}   # churners have {'more' if d > 0 else 'less'} of it here (AUC {a:.2f})"
            for a, c, d in sorted(out, reverse=True)[:limit]] or ["# tenure = -1"]


def _toml_str(v) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_list(vs) -> str:
    return "[" + ", ".join(_toml_str(v) for v in vs) + "]"


def draft_mapping(df: pl.DataFrame, name: str = "data") -> str:
    """A first mapping for a file, as commented TOML to edit: id, target or timestamp/event type, types, pillars, leaks.

    Guesses from column names and values: the id (unique per row: a flat table; repeated with a
    date column: an event log), the churn column and its labels, each column's pillar, sensitive
    personal columns, row numbers, wide categories, and suspected leakage (a column that alone
    almost separates the target, or whose missingness does). Every guess is marked for review.

    Example
    -------
    >>> df = pl.DataFrame({"CustomerId": ["a", "b", "c", "d"], "Exited": [1, 0, 0, 1], "NumOfProducts": [1, 2, 2, 1],
    ...                    "Gender": ["F", "M", "F", "M"]})
    >>> text = draft_mapping(df, "bank.csv")
    >>> m = Mapping.from_dict(tomllib.loads(text))
    >>> m.kind, m.id, m.target, m.sensitive
    ('flat', 'CustomerId', 'Exited', ('Gender',))
    """
    cols = df.columns
    n = df.height
    dates = {c: d for c in cols if (d := _as_dates(df[c])) is not None}
    uniq = {c: df[c].n_unique() for c in cols}
    id_like = [c for c in cols if any(w == _norm(c) or _norm(c).endswith("_" + w) or _norm(c).endswith(w) and w == "id"
                                      or _norm(c).startswith(w) for w in _ID_WORDS) and c not in dates]
    id_unique = [c for c in id_like if uniq[c] == n and df[c].null_count() == 0]
    id_repeat = [c for c in id_like if uniq[c] < n and df[c].null_count() == 0]
    kind = "events" if dates and id_repeat and not id_unique else "flat"
    lines = [f"# Draft mapping for {name}, written by `trustml mapping`: every line is a guess; check it, then run",
             f"#   trustml features --data {name} --mapping THIS_FILE --out features.parquet",
             f"# {n:,} rows x {len(cols)} columns. Pillars: {', '.join(PILLARS)}.",
             f'name = {_toml_str(Path(name).stem)}', f'kind = "{kind}"', ""]
    notes: list[str] = []
    sensitive = [c for c in cols if any(w == _norm(c) or _norm(c).startswith(w) or _norm(c).endswith(w) for w in _SENSITIVE_WORDS)]
    rownum = [c for c in cols if _row_number_like(df[c]) and c not in id_like]
    used: set[str] = set(sensitive) | set(rownum)
    if kind == "flat":
        idc = id_unique[0] if id_unique else None
        two = [c for c in cols if uniq[c] == 2 + (df[c].null_count() > 0) and c != idc]
        # a status with a third value (e.g. 'Unknown') is a churn column too, once that value's rows are left out
        few = [c for c in cols if c != idc and c not in two and 2 < uniq[c] <= 6 and any(w in _norm(c) for w in _TARGET_WORDS)
               and _split_labels(df[c]) is not None]
        target = next((c for w in _TARGET_WORDS for c in two + few if w in _norm(c)), two[-1] if two else None)
        lines.append("[columns]")
        lines.append(f"id = {_toml_str(idc)}" if idc else "# id = \"...\"   # no unique id column found: rows are numbered row-1, row-2, ...")
        exclude: list[str] = []
        if target:
            vals = sorted(df[target].drop_nulls().cast(pl.String).unique().to_list())
            split = _split_labels(df[target])
            if split is not None and len(vals) > 2:
                pos, neg, exclude = split[0], split[1], split[2]
            else:
                pos = next((v for v in vals if v.strip().lower() in _POSITIVE_WORDS), vals[-1])
                neg = [v for v in vals if v != pos]
            if df[target].dtype == pl.Boolean:   # True/False read as booleans: TOML booleans say it as the file does
                lines += [f"target = {_toml_str(target)}   # guessed churn column: check", "positive = [true]   # churned",
                          "negative = [false]   # stayed"]
            else:
                lines += [f"target = {_toml_str(target)}   # guessed churn column: check",
                          f"positive = [{_toml_str(pos)}]   # churned, as the file writes it", f"negative = {_toml_list(neg)}   # stayed"]
            notes += _leak_notes(df, target, pos, {idc} if idc else set())
        else:
            lines.append('target = "..."   # no two-valued column found: name the churn column')
        used |= {c for c in (idc, target) if c}
        money = next((c for c in cols if any(w in _norm(c) for w in ("monthly", "mrr", "charge", "revenue", "price"))
                      and df[c].dtype.is_numeric()), None)
        if money:
            lines.append(f"monthly_value = {_toml_str(money)}   # monthly revenue per customer, for the economics (check)")
        tenure = next((c for c in cols if "tenure" in _norm(c) and df[c].dtype.is_numeric()), None)
        if tenure:
            lines.append(f"tenure = {_toml_str(tenure)}   # months as a customer: the time axis of time to churn (check the unit)")
    else:
        idc = id_repeat[0]
        ts = next(iter(dates))
        typ = next((c for c in cols if c not in (idc, ts) and df[c].dtype == pl.String and 1 < uniq[c] <= 50), None)
        val = next((c for c in cols if c not in (idc, ts) and df[c].dtype.is_numeric() and not _row_number_like(df[c])), None)
        lines += ["[columns]", f"id = {_toml_str(idc)}", f"timestamp = {_toml_str(ts)}"]
        if df[ts].dtype == pl.String:
            lines.append("# timestamp_format = \"%Y-%m-%d\"   # if the dates are ambiguous; 'epoch_s' / 'epoch_ms' for numbers")
        lines.append(f"event_type = {_toml_str(typ)}" if typ else "# event_type = \"...\"   # or [events] type = \"purchase\" when every row is one kind")
        if val:
            lines.append(f"value = {_toml_str(val)}   # numeric value of an event (amount, minutes)")
        used |= {c for c in (idc, ts, typ, val) if c}
        if not typ:
            lines += ["", "[events]", 'type = "purchase"   # every row is one kind of event: name it']
        types = sorted(df[typ].drop_nulls().unique().to_list()) if typ else []
        cancel = [t for t in types if any(w in str(t).lower() for w in ("cancel", "churn", "terminat", "close"))]
        lines += ["", "[churn]"]
        if cancel:
            lines += ['definition = "cancellation"', "", "[event_types]"] + [f"{_toml_str(t)} = \"cancellation\"" for t in cancel]
        else:
            lines += ['definition = "inactivity"   # no cancellation event type found: churn = no event within the horizon',
                      'horizon = "90d"', "active_gap_days = 365"]
        by_pillar: dict[str, list] = {}
        for t in types:
            if t not in cancel:
                by_pillar.setdefault(_guess_pillar(str(t), []), []).append(t)
        lines += ["", "# [subscriptions]   # a file with one row per subscription or renewal (then churn is the end of an active",
                  "#                   # period: remove definition = 'inactivity' from [churn] above):",
                  '# file = "subscriptions.csv"', '# start = "start_date"', '# end = "end_date"', '# value = "mrr"',
                  "# gap_days = 14   # a renewal starting within 14 days of the last end continues the same active period",
                  "", "[pillars]   # event types per trust pillar (the rest: 'other')"]
        lines += [f"{p} = {_toml_list(ms)}" for p, ms in by_pillar.items() if p != "other"]
    if kind == "flat":
        by_pillar = {}
        wide = []
        for c in cols:
            if c in used:
                continue
            s = df[c]
            x, k, _ = _numeric_or_category(s, "", _MAX_CATEGORIES)
            if x is None and s.dtype == pl.String and uniq[c] <= 2000:
                wide.append((c, uniq[c]))
            vals = s.drop_nulls().unique().head(20).to_list()
            by_pillar.setdefault(_guess_pillar(c, vals), []).append(c)
        lines += ["", "[pillars]   # columns per trust pillar (guessed from names and values; the rest: 'other')"]
        lines += [f"{p} = {_toml_list(ms)}" for p, ms in by_pillar.items() if p != "other"]
        if by_pillar.get("other"):
            lines.append(f"# other: {', '.join(by_pillar['other'])}")
        if exclude:
            lines += ["", "[rows]   # rows whose churn label is neither churned nor stayed are left out",
                      f"exclude = {{{_toml_str(target)} = {_toml_list(exclude)}}}"]
        if wide:
            most = max(v for _, v in wide)
            what = ", ".join(f"{c} ({v})" for c, v in wide)
            lines += ["", "[source]", (f"max_categories = {most}   # text columns with more than {_MAX_CATEGORIES} values read as categories: {what}; "
                                       "list them under drop if they are free text" if most <= 2 * _MAX_CATEGORIES else
                                       f"# max_categories = {most}   # text columns with many values (free text or identifiers?): {what}")]
        lines += ["", "[actionable]   # what a retention team can change (uncomment what you can offer): a list = exactly these",
                  "# values, or a range {min = 0, max = 30, step = 5}; with no values, the data's observed range"]
        levers_seen = 0
        for p_name in ("promises", "transparency", "service_quality", "respect_for_time", "engagement"):
            for c in by_pillar.get(p_name, []):
                vals = df[c].drop_nulls().unique().sort()
                if 1 < vals.len() <= 6 and (vals.dtype == pl.String or _whole(vals)) and levers_seen < 8:
                    shown = _toml_list(vals.to_list()) if vals.dtype == pl.String else "[" + ", ".join(str(int(v)) for v in vals) + "]"
                    lines.append(f"# {c} = {shown}")
                    levers_seen += 1
        lines += ["", "[directions]   # +1: more of it raises churn risk; -1: more of it lowers it (for monotone models; the report",
                  "# says where the model contradicts one). Suggested from this file's churn rates: uncomment what you expect"]
        lines += _direction_hints(df, target, pos, used) if target else ["# tenure = -1"]
    top = []
    if sensitive:
        top.append(f"sensitive = {_toml_list(sensitive)}   # personal attributes: kept out of the model and every output")
    if rownum:
        top.append(f"drop = {_toml_list(rownum)}   # row numbers / per-row serials: never features")
    lines[5:5] = top
    if notes:
        lines += ["", "# SUSPECTED LEAKAGE: these columns may be recorded after the churn; if so, add them to drop = [...]"]
        lines += [f"#   {x}" for x in notes]
    return "\n".join(lines) + "\n"
