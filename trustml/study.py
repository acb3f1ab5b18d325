"""One analysis, end to end: data -> features -> model -> evaluation -> explanations -> economics.

A `Study` computes each stage on first use and keeps it, so a notebook (or `trustml report`)
asks for what it shows and nothing is computed twice. The same object serves the simulated
trust world and a user's own data read through a mapping.

Examples
--------
>>> study = Study.load(n_customers=1500, n_months=15, seed=0)
>>> study.source["kind"]
'simulated'
>>> round(float(study.comparison["roc_auc"][0]), 2) > 0.5
True
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from trustml.features import FeatureTable, Snapshots, build_features
from trustml.model import DEFAULT_TRIALS, TemporalSplit, fingerprint, train
from trustml.pillars import TRUST_PILLARS

__all__ = ["Study", "setup_notebook", "CAUSAL_MAX_ROWS", "TRUTH_MAX_CUSTOMERS"]

CAUSAL_MAX_ROWS = 60_000   # labelled rows for double ML at most (a seeded sample of whole customers beyond it)
# levers re-estimated without the revealed traits, to show what they correct (`Study.causal_ablation`, notebook 12):
# contact the customer did not welcome, the survivor selection `trustml.causal`'s docstring describes
CAUSAL_ABLATION_LEVERS = ("respect_for_time",)
FEATURE_PART_CUSTOMERS = 50_000   # features are built in customer partitions of about this many beyond it
TRUTH_MAX_CUSTOMERS = 100_000  # the simulator's counterfactual truth is simulated for the first customers at most (2 blocks)


def _key(data, mapping, n_customers, n_months, seed, trials) -> dict:
    """What identifies one analysis: the same key, the same results (everything is seeded)."""
    if data is None or str(data) == "simulated":
        return {"data": "simulated", "n_customers": n_customers, "n_months": n_months, "seed": seed, "trials": trials}
    m = Path(mapping) if mapping is not None and Path(mapping).exists() else mapping
    return {"data": str(Path(data).resolve()), "mapping": str(m.resolve()) if isinstance(m, Path) else str(m), "trials": trials}


def _link_tree(source: Path, target: Path) -> None:
    """A copy of the folder `source` at `target`, its files hard-linked where the file system allows (no bytes copied)."""
    import os
    import shutil

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, target, copy_function=link)


class _Later:
    """A `Study` attribute not read yet (a study opened from artifacts, or a simulated world on disk): `load(study)`
    reads it on first use, `scan()` gives LazyFrames of it from disk meanwhile."""

    def __init__(self, load, scan):
        self.load, self.scan = load, scan


def _events_of_world(world) -> _Later:
    """A world on disk's event log, read through the world (read once, shared) or scanned."""
    return _Later(lambda s: s.world.events, lambda: world.scan("events"))


class _ReadOnUse:
    """A `Study` attribute that may hold a `_Later` until first used: the event log and the feature table are large
    (about 130 events and 10 feature rows a customer), and a notebook that shows stages never reads them (a world on
    disk reads its own tables on first use: `simulator.WorldOnDisk`)."""

    def __set_name__(self, owner, name: str):
        self.key = f"_{name}"

    def __get__(self, study, owner=None):
        if study is None:
            return self
        value = study.__dict__[self.key]
        if isinstance(value, _Later):
            value = study.__dict__[self.key] = value.load(study)
        return value

    def __set__(self, study, value) -> None:
        study.__dict__[self.key] = value


class _TableOnDisk(_Later):
    """A saved feature table (`FeatureTable.write`): its settings and row count at once, its rows when first needed
    or scanned with a filter (at a million customers, ten million rows a notebook rarely reads whole)."""

    def __init__(self, path: Path):
        super().__init__(lambda _: FeatureTable.read(path), lambda: pl.scan_parquet(path))
        self.head = FeatureTable.read(path, n_rows=0)
        self.rows = self.scan().select(pl.len()).collect().item()


# -- stages kept as artifacts: parquet and JSON, no pickle ----------------------------------------------
_STAGES: dict[str, tuple] = {}   # name -> (write(value, folder), read(folder, study))


def _write_value(value, folder: Path) -> None:
    """Frames, arrays, dicts, lists and scalars (nested) as parquet files plus one JSON skeleton."""
    import datetime as dt
    folder.mkdir(parents=True, exist_ok=True)
    count = iter(range(1 << 30))

    def enc(v):
        if isinstance(v, pl.DataFrame):
            name = f"{next(count)}.parquet"
            v.write_parquet(folder / name)
            return {"frame": name}
        if isinstance(v, pl.Series):
            return {"series": enc(v.to_frame())}
        if isinstance(v, np.ndarray):
            return {"array": enc(pl.DataFrame({"v": v.ravel()})), "shape": list(v.shape)}
        if isinstance(v, dict):
            return {"dict": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, list | tuple):
            return {"list" if isinstance(v, list) else "tuple": [enc(x) for x in v]}
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, dt.date):
            return {"date": v.isoformat()}
        if v is None or isinstance(v, str | int | float | bool):
            return v
        raise TypeError(f"stage value of type {type(v).__name__} has no artifact format")
    (folder / "value.json").write_text(json.dumps(enc(value)))


def _read_value(folder: Path, study=None):
    import datetime as dt

    def dec(v):
        if not isinstance(v, dict):
            return v
        if "frame" in v:
            return pl.read_parquet(folder / v["frame"])
        if "series" in v:
            return dec(v["series"]).to_series()
        if "array" in v:
            return dec(v["array"])["v"].to_numpy().reshape(v["shape"])
        if "dict" in v:
            return {dec(k): dec(x) for k, x in v["dict"]}
        if "list" in v:
            return [dec(x) for x in v["list"]]
        if "tuple" in v:
            return tuple(dec(x) for x in v["tuple"])
        return dt.date.fromisoformat(v["date"])
    return dec(json.loads((folder / "value.json").read_text()))


def _write_explanation(expl, folder: Path) -> None:
    _write_value({"values": expl.values, "base_values": expl.base_values, "data": np.asarray(expl.data, dtype=float),
                  "feature_names": list(expl.feature_names), "output_names": expl.output_names}, folder)


def _read_explanation(folder: Path, study=None):
    import shap
    d = _read_value(folder)
    return shap.Explanation(values=d["values"], base_values=d["base_values"], data=d["data"],
                            feature_names=d["feature_names"], output_names=d["output_names"])


def _write_survival(surv, folder: Path) -> None:
    surv.save(folder)


def _read_survival(folder: Path, study=None):
    from trustml.survival import SurvivalModel
    return SurvivalModel.load(folder)


def _write_effects(effects, folder: Path) -> None:
    from trustml.causal import save_effects
    save_effects(effects, folder)


def _read_effects(folder: Path, study=None):
    from trustml.causal import load_effects
    return load_effects(folder)


_IMPORTED_APART: list[str] = []


def _import_apart(names: tuple[str, ...] = ("optuna", "econml.dml")) -> None:
    """Import the libraries stages load lazily, once, on a thread of their own. These keep the ImportError of an
    optional dependency they lack (Optuna: redis; EconML: dowhy, ray) with its traceback, whose frames link back
    through the stack that imported them: imported inside a stage, they kept that Study and all its data alive for
    the life of the process (the report's analysis, 12 GB at a million customers, after the notebooks began)."""
    import contextlib
    import importlib
    import threading
    todo = [n for n in names if n not in _IMPORTED_APART]
    if todo:
        def load() -> None:
            for n in todo:
                with contextlib.suppress(ImportError):   # the stage that needs it says so
                    importlib.import_module(n)
        worker = threading.Thread(target=load, name="trustml-imports")
        worker.start()
        worker.join()
        _IMPORTED_APART.extend(todo)


def stage(write=_write_value, read=_read_value):
    """A computed-once stage of `Study`: `Study.save` writes it, and a study opened from artifacts reads it
    instead of recomputing it."""
    def wrap(compute):
        name = compute.__name__
        _STAGES[name] = (write, read)

        def get(self):
            known = self.__dict__
            if name not in known:
                path = None if self.artifacts is None else self.artifacts / "stages" / name
                if path is not None and path.is_dir():
                    known[name] = read(path, self)
                else:
                    _import_apart()
                    known[name] = compute(self)
            return known[name]
        get.__doc__ = compute.__doc__
        return property(get)
    return wrap


def _features(customers, events, snapshots, spec, as_of, cluster) -> FeatureTable:
    """`build_features`, on Dask when `cluster` is given (the tables pass through a private temporary folder); beyond
    `FEATURE_PART_CUSTOMERS` customers, in customer partitions one after another (the memory of one partition)."""
    kwargs = {} if spec is None else {"spec": spec}
    if cluster is None and customers.height > FEATURE_PART_CUSTOMERS:
        from trustml.distributed import features_in_parts
        return features_in_parts(customers, events, snapshots, as_of=as_of, parts=-(-customers.height // FEATURE_PART_CUSTOMERS),
                                 **kwargs)
    if cluster is None:
        return build_features(customers, events, snapshots, as_of=as_of, **kwargs)
    import shutil
    import tempfile

    from trustml import distributed
    folder = Path(tempfile.mkdtemp(prefix="trustml-cluster-"))
    try:
        for name, frame in (("customers", customers), ("events", events)):
            (folder / name).mkdir()
            frame.write_parquet(folder / name / "part-00000.parquet")
        with distributed.features(folder, snapshots, cluster=cluster, as_of=as_of, **kwargs) as parts:
            return parts.collect()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def setup_notebook() -> None:
    """Display settings for the notebook suite: short floats (stable stored outputs), readable plots, and a
    seeded global random state (shap's beeswarm draws points in a random order)."""
    import matplotlib as mpl
    np.random.seed(0)
    pl.Config.set_float_precision(3)
    pl.Config.set_tbl_rows(12)
    pl.Config.set_fmt_str_lengths(90)
    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    mpl.rcParams.update({"figure.dpi": 80, "axes.spines.top": False, "axes.spines.right": False})


class Study:
    """Everything one analysis needs, computed on first use. Build it with `Study.load`."""

    def __init__(self, table: FeatureTable, *, source: dict, world=None, mapping=None, events=None, trials: int | None = None):
        self.table, self.source, self.mapping = table, source, mapping
        self.world, self.events = world, events  # or, opened from artifacts, read on first use (see `open`)
        self.trials = DEFAULT_TRIALS if trials is None else trials
        from trustml.contract import DataWarnings
        self.warnings = DataWarnings()   # odd but not wrong things in the input, shown first in summaries and reports
        self.raw = None                  # the user's table as read (sensitive columns for fairness checks); never written
        self.artifacts: Path | None = None  # a folder `Study.save` wrote: stages found there are read, not recomputed
        self.cluster = None                 # Dask for features and explanations (see `load`); None: this process

    # -- construction ------------------------------------------------------------------------
    events, table = _ReadOnUse(), _ReadOnUse()   # opened from artifacts or on disk: read on first use (`open`)

    @property
    def feature_settings(self) -> FeatureTable:
        """The feature table's registry, snapshot settings, as-of date and left-out features, without reading its rows
        (`table` reads every row; at a million customers, ten million)."""
        t = self.__dict__["_table"]
        return t.head if isinstance(t, _TableOnDisk) else t

    def scan_features(self) -> pl.LazyFrame:
        """The feature table's rows as a LazyFrame: a scan of the artifacts when they are not read (a query reads only
        the columns and rows it needs), else the rows in memory."""
        t = self.__dict__["_table"]
        return t.scan() if isinstance(t, _Later) else t.frame.lazy()

    @property
    def feature_rows(self) -> int:
        """Rows of the feature table (known without reading them)."""
        t = self.__dict__["_table"]
        return t.rows if isinstance(t, _TableOnDisk) else t.frame.height

    def _labelled_where(self, where: pl.Expr) -> pl.DataFrame:
        """The labelled rows of the feature table that satisfy `where`, in table order (read from disk alone when
        the table is not in memory: a notebook that shows the test rows never reads the other snapshots)."""
        return self.scan_features().filter(pl.col("churned").is_not_null() & where).collect()

    def scan_world(self) -> tuple[pl.LazyFrame, pl.LazyFrame] | None:
        """The simulated world's customers and events as LazyFrames: scanned from the artifacts when a study opened
        from them has not read the world (at a million customers, 130 million events), else the ones in memory.
        None for real data."""
        if not self.is_simulated:
            return None
        return self.world.scan("customers"), self.world.scan("events")

    def scan_events(self) -> pl.LazyFrame | None:
        """The event log as a LazyFrame (see `scan_world`): scanned from the artifacts when not read yet."""
        e = self.__dict__["_events"]
        return e.scan() if isinstance(e, _Later) else None if e is None else e.lazy()

    @property
    def is_simulated(self) -> bool:
        """Data from the trust-world simulator, with its ground truth."""
        return self.source.get("kind") == "simulated"

    @property
    def has_events(self) -> bool:
        """An event log (False for a flat table), known without reading it."""
        return self.__dict__["_events"] is not None

    @classmethod
    def load(cls, data: str | Path | None = None, mapping: str | Path | None = None, *, n_customers: int = 3000,
             n_months: int = 18, seed: int = 0, trials: int | None = None, artifacts: str | Path | None = None,
             cluster=None) -> Study:
        """The simulated trust world (no `data`), or a user's file read through a mapping (TOML/YAML or a shipped name).

        trials: Optuna trials when the model is trained (default `trustml.model.DEFAULT_TRIALS`; 0: no search).
        artifacts: a folder written by `Study.save` (`trustml report` passes one to every notebook): when it holds
        this very analysis (same data, mapping, sizes, seed and trials), its stages are read, not recomputed;
        otherwise everything is computed here.
        cluster: build features and explanations on Dask (`trustml.distributed`: 'local', a scheduler address or a
        `Client`), partitioned by customer; the results equal the single-machine run (the model is fitted here).
        """
        key = _key(data, mapping, n_customers, n_months, seed, DEFAULT_TRIALS if trials is None else trials)
        if artifacts is not None and (Path(artifacts) / "study.json").exists():
            saved = json.loads((Path(artifacts) / "study.json").read_text())
            if saved["key"] == key:
                return cls.open(artifacts)
        if data is None or str(data) == "simulated":
            study = cls.simulated(n_customers, n_months, seed, cluster=cluster)
        elif mapping is None:
            raise ValueError(f"{data}: reading your own data needs a mapping file (see trustml/mappings/*.toml)")
        else:
            study = cls.from_file(data, mapping, cluster=cluster)
        study.cluster = cluster
        if trials is not None:
            study.trials = trials
        elif study.mapping is not None and "trials" in study.mapping.model:
            study.trials = int(study.mapping.model["trials"])
        return study

    def events_of(self, frame: pl.DataFrame) -> pl.DataFrame | None:
        """The event log's rows of `frame`'s customers: a filtered scan when the log is not in memory (at a million
        customers, 130 million events), else a filter. None without an event log."""
        if not self.has_events:
            return None
        ids = frame.select("customer_id").unique().lazy()
        return self.scan_events().join(ids, on="customer_id", how="semi", maintain_order="left").collect()

    @classmethod
    def simulated(cls, n_customers: int = 3000, n_months: int = 18, seed: int = 0, snapshots: Snapshots = Snapshots(),
                  cluster=None) -> Study:
        """The simulated trust world, in memory; beyond `FEATURE_PART_CUSTOMERS` customers (and without a cluster)
        on disk, in a private temporary folder deleted with the study: simulated block by block and built into
        features one block at a time, its tables read only when a stage asks (`simulator.WorldOnDisk`)."""
        if cluster is None and n_customers > FEATURE_PART_CUSTOMERS:
            return cls._simulated_on_disk(n_customers, n_months, seed, snapshots)
        from trustml.contract import validate
        from trustml.simulator import simulate
        world = simulate(n_customers, n_months, seed)
        validate(world.customers, world.events, as_of=world.as_of)
        table = _features(world.customers, world.events, snapshots, None, world.as_of, cluster)
        source = {"kind": "simulated", "name": "trustml trust-world simulator", "seed": seed, "customers": n_customers,
                  "months": n_months, "events": world.events.height, "fingerprint": fingerprint(world.events)}
        return cls(table, source=source, world=world, events=world.events)

    @classmethod
    def _simulated_on_disk(cls, n_customers: int, n_months: int, seed: int, snapshots: Snapshots) -> Study:
        import shutil
        import weakref

        from trustml.contract import validate
        from trustml.distributed import features_in_blocks
        from trustml.model import _Fingerprint
        from trustml.outputs import private_folder
        from trustml.simulator import WorldOnDisk, simulate_to_dir
        folder = private_folder("trustml-world-")
        try:
            world = WorldOnDisk(simulate_to_dir(n_customers, n_months, seed, folder / "world"))
            digest = _Fingerprint()

            def each(customers, events):   # the checks and fingerprint of the in-memory path, block by block
                validate(customers, events, as_of=world.as_of)
                digest.update(events)
            table = features_in_blocks(world.folder, snapshots, as_of=world.as_of, each=each)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        source = {"kind": "simulated", "name": "trustml trust-world simulator", "seed": seed, "customers": n_customers,
                  "months": n_months, "events": world.n_events, "fingerprint": digest.hexdigest()}
        study = cls(table, source=source, world=world, events=_events_of_world(world))
        weakref.finalize(study, shutil.rmtree, folder, True)
        return study

    @classmethod
    def from_file(cls, data: str | Path, mapping: str | Path, cluster=None) -> Study:
        from trustml.contract import DataWarnings
        from trustml.mapping import event_tables, fill_lever_ranges, flat_table, label_warnings, load_mapping, read_data, read_subscriptions
        from trustml.privacy import use_secret_salt
        use_secret_salt()  # real ids: pseudonyms with a secret salt, never the public one
        warnings = DataWarnings()
        m = load_mapping(mapping)
        df = read_data(data, m, warnings=warnings)
        source = {"kind": m.kind, "name": m.name or Path(data).name, "file": Path(data).name, "mapping": Path(m.origin).name,
                  "rows": df.height, "fingerprint": fingerprint(df)}
        if m.kind == "flat":
            study = cls(flat_table(df, m, source=str(data), warnings=warnings), source=source, mapping=m)
        else:
            subs, subs_path = read_subscriptions(m, data) if m.subscriptions else (None, None)
            customers, events, spec, snaps, as_of = event_tables(df, m, source=str(data), subscriptions=subs,
                                                                 subscriptions_source=str(subs_path), warnings=warnings)
            source["events"] = events.height
            table = fill_lever_ranges(_features(customers, events, snaps, spec, as_of, cluster), m)
            label_warnings(table, warnings)
            study = cls(table, source=source, mapping=m, events=events)
        study.warnings, study.raw = warnings, df
        return study

    # -- artifacts: compute once, read many times ----------------------------------------------
    def save(self, folder: str | Path, *, key: dict | None = None) -> Path:
        """The computed stages as artifacts (parquet, LightGBM text, JSON; no pickle) for `Study.open`.

        They hold raw ids: keep the folder private (`trustml report` uses a temporary one and deletes it).
        """
        from trustml.simulator import WorldOnDisk, write_world
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.table.write(folder / "features.parquet")
        self.trained.save(folder / "model")
        if self.is_simulated and isinstance(self.world, WorldOnDisk):
            _link_tree(self.world.folder, folder / "world")
        elif self.is_simulated:
            write_world(self.world, folder / "world")
        elif self.events is not None:
            self.events.write_parquet(folder / "events.parquet")
        for name, (write, _) in _STAGES.items():
            if name in self.__dict__ and self.__dict__[name] is not None:
                write(self.__dict__[name], folder / "stages" / name)
        mapping = None if self.mapping is None else self.mapping.origin
        warnings = [{"table": p.table, "column": p.column, "problem": p.problem, "n_rows": p.n_rows, "examples": list(p.examples)}
                    for p in self.warnings]
        (folder / "study.json").write_text(json.dumps({"key": key, "source": self.source, "trials": self.trials,
                                                       "mapping": mapping, "warnings": warnings}, indent=2, default=str))
        return folder

    @classmethod
    def open(cls, folder: str | Path) -> Study:
        """A study from the artifacts `Study.save` wrote: the stages found there are read, the others computed on use."""
        from trustml.mapping import load_mapping
        from trustml.model import TrainedModel, split_from_metadata
        folder = Path(folder)
        meta = json.loads((folder / "study.json").read_text())
        table = _TableOnDisk(folder / "features.parquet")   # rows read when first needed
        world = events = None
        if (folder / "world").is_dir():   # read on first use
            from trustml.simulator import WorldOnDisk
            world = WorldOnDisk(folder / "world")
            events = _events_of_world(world)
        elif (folder / "events.parquet").exists():
            events = _Later(lambda _: pl.read_parquet(folder / "events.parquet"), lambda: pl.scan_parquet(folder / "events.parquet"))
        mapping = None if meta["mapping"] is None else load_mapping(meta["mapping"])
        if mapping is not None:
            from trustml.privacy import use_secret_salt
            use_secret_salt()
        study = cls(table, source=meta["source"], world=world, mapping=mapping, events=events, trials=meta["trials"])
        from trustml.contract import Problem
        study.warnings.extend(Problem(**{**w, "examples": tuple(w["examples"])}) for w in meta.get("warnings", []))
        trained = TrainedModel.load(folder / "model")
        dates = table.scan().filter(pl.col("churned").is_not_null()).select("snapshot_date", "churned").unique("snapshot_date").collect()
        split = split_from_metadata(dataclasses.replace(table.head, frame=dates), trained.metadata["trained_on"])
        study.__dict__["_fit"] = (trained, split)
        study.artifacts = folder
        return study

    # -- stages --------------------------------------------------------------------------------
    @property
    def registry(self):
        return self.feature_settings.registry

    @cached_property
    def _fit(self):
        _import_apart()
        return train(self.table, trials=self.trials)

    @property
    def trained(self):
        return self._fit[0]

    @property
    def split(self):
        return self._fit[1]

    @cached_property
    def test(self) -> pl.DataFrame:
        """Held-out rows: the latest labelled snapshots (or held-out customers for flat data)."""
        if isinstance(self.split, TemporalSplit):
            return self._labelled_where(pl.col("snapshot_date").is_in(list(self.split.test)))
        return self.split.frames(self.table.labelled())[2]

    @stage()
    def latest(self) -> pl.DataFrame:
        """Customers to act on now: the latest snapshot (labelled or not). For a flat table, every customer it does
        not mark as churned, each with an out-of-fold risk (`trustml.model.out_of_fold`): campaigns and the explorer
        cover them all, never the training customers' in-sample risks."""
        if self.feature_settings.is_flat:
            from trustml.model import out_of_fold
            return out_of_fold(self.table, self.trained, self.split)
        return self.table.latest()

    def riskiest(self, n: int, frame: pl.DataFrame | None = None) -> pl.DataFrame:
        """The `n` rows of `frame` (default: `latest`) with the highest predicted risk, riskiest first."""
        frame = self.latest if frame is None else frame
        order = np.argsort(-self.trained.predict_risk(frame), kind="stable")[:n]
        return frame[order]

    @cached_property
    def oracle(self) -> np.ndarray | None:
        """The simulator's true churn probability for the test rows (None for real data)."""
        if not self.is_simulated:
            return None
        keys = self.test.select("customer_id", pl.col("snapshot_date").alias("month_start"))
        truth = (self.world.scan("truth").select("customer_id", "month_start", "churn_prob")
                 .filter(pl.col("month_start").is_in(keys["month_start"].unique().implode())))
        return keys.lazy().join(truth, on=["customer_id", "month_start"], how="left", maintain_order="left").collect()["churn_prob"].to_numpy()

    @stage()
    def comparison(self) -> pl.DataFrame:
        from trustml.evaluate import compare_models
        return compare_models(self.table, self.split, self.trained, oracle=self.oracle)

    @stage()
    def calibration(self) -> pl.DataFrame:
        """Calibration on the test rows before and after the calibrator (Brier, log loss, error, distinct scores)."""
        from trustml.evaluate import calibration_report
        te = self.test
        return calibration_report(te["churned"].to_numpy(), self.trained.predict_risk(te, calibrated=False), self.trained.predict_risk(te))

    @stage()
    def folds(self) -> pl.DataFrame:
        """Held-out folds beside the single split: rolling-origin backtest (stratified 5-fold CV for flat tables),
        refitting the chosen parameters."""
        from trustml.evaluate import held_out_folds
        return held_out_folds(self.table, self.trained)

    @property
    def leaks(self) -> list[dict]:
        """Features suspected of leaking the label (see `trustml.leakage`), with the evidence."""
        return self.trained.metadata.get("leakage") or []

    @stage(_write_explanation, _read_explanation)
    def explanation(self):
        """Exact TreeSHAP (log-odds) for the test rows, as a `shap.Explanation`."""
        if self.cluster is not None:
            from trustml import distributed
            return distributed.explain(self.trained, self.test, cluster=self.cluster)
        from trustml.explanations import explain
        return explain(self.trained, self.test)

    @stage()
    def directions(self) -> tuple[pl.DataFrame, list[str]]:
        """(table, warnings): does the model agree with each declared direction on the test rows
        (`trustml.explanations.direction_check`)? Contradictions are warnings in the summary and model card."""
        from trustml.explanations import direction_check
        c = direction_check(self.explanation, self.registry, self.test["churned"].to_numpy(),
                            constrained=self.trained.model.monotone_constraints is not None)
        return c.table, list(c.warnings)

    @stage()
    def pillars(self) -> pl.DataFrame:
        from trustml.explanations import pillar_importance
        return pillar_importance(self.explanation, self.registry)

    @cached_property
    def churn_rate(self) -> float:
        return float(self._labelled_where(pl.lit(True)).select(pl.col("churned").mean()).item())

    def value(self, frame: pl.DataFrame) -> np.ndarray:
        """Money at stake per row if the customer leaves (see `value_note`)."""
        from trustml.mapping import value_of
        return value_of(frame, self.mapping, self.churn_rate)[0]

    @property
    def value_note(self) -> str:
        from trustml.mapping import value_of
        return value_of(self.latest.head(1), self.mapping, self.churn_rate)[1]

    @cached_property
    def fairness(self):
        """The campaign's fairness across the mapping's sensitive columns (`trustml.monitor.fairness`, Fairlearn):
        selection rates, error rates and calibration per group on the test rows; None where none are marked."""
        m = self.mapping
        if m is None or not m.sensitive or self.raw is None or not m.id:
            return None
        from trustml.monitor import fairness, groups_of
        return fairness(self.trained, self.test, groups_of(self.raw, m))

    def _estimate_levers(self, levers: list[str] | None = None, **kwargs) -> dict:
        """`causal.lever_effects` of `levers` (default: all) on `causal_rows` and their customers' events; needs an event log."""
        from trustml.causal import lever_effects
        if not self.has_events:
            raise ValueError("causal lever effects need an event log (exposures are computed from events); this data is a flat table")
        rows = self.causal_rows
        return lever_effects(rows, self.events_of(rows), self.registry, levers, seed=self.source.get("seed", 0), **kwargs)

    @stage(_write_effects, _read_effects)
    def causal_effects(self) -> dict:
        """Causal lever effects from the observed tables (double machine learning, `trustml.causal`); needs an event log."""
        return self._estimate_levers()

    @stage(_write_effects, _read_effects)
    def causal_ablation(self) -> dict:
        """The effects of `CAUSAL_ABLATION_LEVERS` without the revealed per-customer traits (`causal.lever_effect` with
        ``traits=False``), on `causal_rows` with the same folds: beside `causal_effects`, what those controls correct
        (survivor selection; notebook 12). Only levers whose events the data has; needs an event log."""
        return self._estimate_levers(list(CAUSAL_ABLATION_LEVERS), traits=False)

    @stage()
    def causal_rows(self) -> pl.DataFrame:
        """The labelled rows causal effects are estimated on: all of them, or beyond `CAUSAL_MAX_ROWS` a seeded sample of
        whole customers (every snapshot of a kept customer), the same rows for the estimate and its truth."""
        from trustml.model import sample_customers
        rows = self._truth_scoped(self.table.labelled())   # on the simulator: customers whose truth is simulated
        return sample_customers(rows, CAUSAL_MAX_ROWS, self.source.get("seed", 0))[0]

    def lever_effects(self, levers: list[str] | None = None) -> dict | None:
        """Causal lever effects for what-ifs: None without an event log; every lever (`causal_effects`, computed
        once) when `levers` is None; else only `levers`, estimated here (about 8 s each at the report's default 5,000 customers)."""
        if not self.has_events:
            return None
        return self.causal_effects if levers is None else self._estimate_levers(levers)

    def explorer(self, causal_levers: list[str] | None = None, **kwargs):
        """The what-if explorer on `latest` with everything this data allows: causal estimates beside the model's
        answers (`lever_effects`), the survival curve before and after (where one can be fitted), risks computed once."""
        from trustml.explorer import Explorer
        surv = None if self.survival_problem else self.survival   # e.g. a flat table with no tenure: no curve to draw
        effects = self.lever_effects(causal_levers) or None
        e = self.__dict__["_events"]   # not read yet (a report's artifacts): a scan, filtered per customer picked
        events = (e.scan() if isinstance(e, _Later) else e) if effects else None
        return Explorer(self.trained, self.latest, effects=effects, events=events, survival=surv,
                        risk=self.latest_risk, **kwargs)

    @cached_property
    def survival_problem(self) -> str | None:
        """Why no survival curve can be fitted on this data (e.g. a flat table with no tenure column), or None."""
        from trustml.contract import ContractError
        try:
            _ = self.survival
        except ContractError as e:
            return "; ".join(p.problem for p in e.problems)
        return None

    @stage()
    def latest_risk(self) -> np.ndarray:
        """`trained.predict_risk(latest)`, computed once (the explorer and campaigns read it)."""
        return self.trained.predict_risk(self.latest)

    @stage()
    def causal_truth(self) -> pl.DataFrame | None:
        """The simulator's true per-row effect of each lever in `causal_effects`, on the same rows and estimand
        (common random numbers; `trustml.causal.simulator_truth`); None for real data."""
        if not self.is_simulated:
            return None
        from trustml.causal import simulator_truth
        s = self.source
        return simulator_truth(self.causal_rows, n_customers=self.truth_customers, n_months=s["months"], seed=s["seed"],
                               levers=list(self.causal_effects), effects=self.lever_truth)

    @stage(_write_survival, _read_survival)
    def survival(self):
        """Discrete-time hazard model (`trustml.survival`): survival curves, expected months, lifetime value."""
        from trustml.survival import fit_survival
        tenure = self.mapping.tenure if self.mapping is not None else None
        return fit_survival(self.table, tenure=tenure, seed=self.source.get("seed", 0))

    @stage()
    def clv(self) -> np.ndarray:
        """Customer lifetime value at stake per row of `latest`, from each customer's survival curve (see `clv_note`)."""
        from trustml.survival import lifetime_value
        return lifetime_value(self.survival, self.latest, self.mapping)[0]

    @property
    def clv_note(self) -> str:
        from trustml.survival import lifetime_value
        _, a = lifetime_value(self.survival, self.latest.head(1), self.mapping)
        return ("value at stake: customer lifetime value from each customer's survival curve over "
                f"{self.survival.horizon} months (" + "; ".join(a.lines(self.survival.horizon)) + ")")

    @cached_property
    def value_at_stake(self) -> tuple[np.ndarray, str, str]:
        """(money at stake per row of `latest`, basis, how it was worked out): customer lifetime value from each
        customer's survival curve where one can be fitted; else the flat value (`value`), saying why."""
        from trustml.contract import ContractError
        try:
            return self.clv, "clv", self.clv_note
        except ContractError as e:
            why = "; ".join(p.problem for p in e.problems)
            return self.value(self.latest), "flat", f"{self.value_note} (no lifetime value: {why})"

    @cached_property
    def economics(self):
        """The retention campaign priced on the value at stake: lifetime value where survival curves exist."""
        from trustml.economics import retention_economics
        value, basis, _ = self.value_at_stake
        return retention_economics(self.latest_risk, value, value_basis=basis)

    @cached_property
    def truth_customers(self) -> int | None:
        """Customers the simulator's truth checks cover (None for real data): every customer up to
        `TRUTH_MAX_CUSTOMERS`, beyond it the first `TRUTH_MAX_CUSTOMERS`. The simulator draws customers in independent
        blocks, so they are a random sample like any other, and their truth is simulated without the rest."""
        if not self.is_simulated:
            return None
        return min(int(self.source["customers"]), TRUTH_MAX_CUSTOMERS)

    def _truth_scoped(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame`'s rows of the customers the truth covers (all rows for real data and up to `TRUTH_MAX_CUSTOMERS`)."""
        if self.truth_customers is None or self.truth_customers >= int(self.source["customers"]):
            return frame
        from trustml.simulator import leading_customers
        return frame.filter(leading_customers(self.truth_customers))

    @cached_property
    def lever_truth(self) -> pl.DataFrame | None:
        """The simulator's true effect of each lever's policy (`explanations.LEVERS`, the same policies as
        `causal.CAUSAL_LEVERS`, a test checks) per customer-month, simulated once for `truth`, `whatif_truth` and
        `causal_truth` (common random numbers); None for real data. Not saved: `compute` lets it go once those
        stages are done."""
        if not self.is_simulated:
            return None
        from trustml.explanations import LEVERS
        from trustml.simulator import Policy, true_effects
        s = self.source
        return true_effects(self.truth_customers, s["months"], s["seed"], {p: Policy(**v) for p, v in LEVERS.items()},
                            config=self.world.config)

    @stage()
    def truth(self) -> dict | None:
        """Explanations vs the simulator's truth on the test rows of `truth_customers` (None for real data)."""
        if not self.is_simulated:
            return None
        from trustml.explanations import truthfulness
        test, expl, truth = self.test, self.explanation, self.world.scan("truth")
        if self.truth_customers < self.source["customers"]:
            from trustml.simulator import leading_customers
            keep = test.select(leading_customers(self.truth_customers)).to_series().to_numpy()
            test, expl, truth = test.filter(pl.Series(keep)), expl[keep], truth.filter(leading_customers(self.truth_customers))
        return truthfulness(self.trained, test, truth.collect(), n_customers=self.truth_customers,
                            n_months=self.source["months"], seed=self.source["seed"], expl=expl, effects=self.lever_truth)

    @stage()
    def whatif_truth(self) -> dict | None:
        """The model's what-if answers for the 100 riskiest test rows (of `truth_customers`) beside the simulator's true effects
        (`trustml.whatif.whatif_vs_truth`); None for real data."""
        if not self.is_simulated:
            return None
        from trustml.whatif import whatif_vs_truth
        s = self.source
        return whatif_vs_truth(self.trained, self._truth_scoped(self.test), n_customers=self.truth_customers, n_months=s["months"],
                               seed=s["seed"], top_n=100, effects=self.lever_truth)

    @stage()
    def survival_truth(self) -> dict | None:
        """Survival curves and lifetime value beside the simulator's true ones (`trustml.survival.versus_truth`,
        6 months, on `truth_customers`); None for real data."""
        if not self.is_simulated:
            return None
        from trustml.survival import versus_truth
        table = dataclasses.replace(self.table, frame=self._truth_scoped(self.table.frame))
        return versus_truth(table, self.world, 6, seed=self.source["seed"])

    def compute(self, stages: list[str] | None = None, *, progress: bool = False, jobs: int = 1) -> Study:
        """Compute `stages` (default: every stage that applies to this data) once, e.g. before `save`.

        jobs=2: the causal effects and the simulator's truth for them (about as long as everything else at the
        default size) run in a second thread beside the model, survival and the stages that read them; so does the
        survival truth (its own survival model) when the simulated world is in memory. Each stage is
        seeded on its own, so the results are the same as with jobs=1; LightGBM and polars release the GIL.
        While the two threads run side by side, BLAS and OpenMP are held to one thread each
        (`distributed.one_thread_each`); once the second thread is done, the first has every core again.
        """
        if stages is None:
            stages = ["comparison", "calibration", "folds", "explanation", "pillars", "directions", "latest", "latest_risk",
                      "economics"]
            if self.is_simulated:
                stages += ["truth", "whatif_truth", "causal_effects", "causal_truth", "causal_ablation", "survival_truth"]
        stages = list(stages)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(stages), desc="analysis", unit="stage")

        done: set[str] = set()
        side: dict = {"limits": None, "worker": None}

        def alone() -> None:
            """Between two stages of the calling thread: the second thread is done, so BLAS may use every core again."""
            if side["limits"] is not None and not side["worker"].is_alive():
                side["limits"].unregister()
                side["limits"] = None

        def run(names: list[str], between=lambda: None) -> None:
            for name in names:
                if name in done:
                    continue
                getattr(self, name)
                done.add(name)
                between()
                if bar is not None and name in stages:
                    bar.set_postfix_str(name)
                    bar.update()
        try:
            beside = []
            if jobs > 1:
                truth = self.is_simulated and any(n in stages for n in ("truth", "whatif_truth", "causal_truth"))
                beside = [n for n in ("causal_effects",) if n in stages] + (["lever_truth"] if truth else []) \
                    + [n for n in ("causal_truth", "causal_ablation") if n in stages]
                from trustml.simulator import WorldOnDisk
                if "survival_truth" in stages and self.is_simulated and not isinstance(self.world, WorldOnDisk):
                    beside.append("survival_truth")   # balances the threads; a world on disk (large) keeps its memory apart
            if beside:
                import threading
                import warnings

                from trustml.causal import quiet_nuisance_notes
                failed: list[BaseException] = []

                def other() -> None:
                    from threadpoolctl import threadpool_limits
                    try:
                        # OpenMP's thread count is per pthread: the limit of the calling thread does not reach this one
                        with threadpool_limits(limits=1, user_api="openmp"):
                            run(beside)
                    except BaseException as e:  # noqa: BLE001  (re-raised in the calling thread)
                        failed.append(e)
                from trustml.distributed import one_thread_each
                with warnings.catch_warnings():   # once around both threads: they share the one filter list
                    quiet_nuisance_notes()
                    side["limits"] = one_thread_each()   # two threads on the cores: one BLAS / OpenMP thread each
                    side["worker"] = worker = threading.Thread(target=other, name="trustml-beside-the-model", daemon=True)
                    worker.start()
                    run([n for n in stages if n not in beside and n not in ("truth", "whatif_truth")], alone)
                    worker.join()
                    alone()
                if failed:
                    raise failed[0]
            run([n for n in stages if n not in beside])   # what is left (read from memory if already computed)
        finally:
            # stopped by an error or Ctrl-C while the second thread still runs its stage (it is not waited for): the
            # limits stay, as changing BLAS threads under a running call is not safe
            if side["limits"] is not None and not side["worker"].is_alive():
                side["limits"].unregister()
            if bar is not None:
                bar.close()
        self.__dict__.pop("lever_truth", None)   # only the truth stages read it
        return self

    # -- outputs -------------------------------------------------------------------------------
    def model_card(self) -> dict:
        """What the model is, what it was trained on, how good it is, and its limits: a JSON-ready dict."""
        reg, comp = self.registry, self.comparison
        snaps = self.feature_settings.snapshots
        label = ("the data's own churn column" if snaps.churn == "label" else
                 f"{snaps.churn} within {snaps.horizon} after a lead of {snaps.lead}, snapshots every {snaps.every}")
        from trustml.leakage import describe_leaks
        calibrator = self.trained.calibrator
        cal_where = "cross-fitted predictions of the training customers" if self.feature_settings.is_flat else "snapshots after the training ones"
        card = {
            "warnings": describe_leaks(self.leaks) + self.directions[1] + [str(p) for p in self.warnings],
            "model": "LightGBM churn classifier (trustml.ChurnModel), parameters tuned per data set with Optuna, "
                     + (f"{calibrator.method_} calibration on {cal_where}" if calibrator else "no calibration"),
            "data": {**self.source, "feature_rows": self.feature_rows, "label": label,
                     "training_fingerprint": self.trained.metadata["trained_on"]["fingerprint"]},
            "split": self.trained.metadata["trained_on"],
            "tuning": self.trained.metadata.get("tuning"),
            "features": [{"name": f.name, "pillar": f.pillar, "actionable": f.actionable, "description": f.description} for f in reg],
            "left_out": self.feature_settings.dropped,
            "pillars": reg.pillars,
            "metrics": comp.to_dicts(),
            "held_out_folds": self.folds.to_dicts(),
            "calibration": {"method": None if calibrator is None else calibrator.method_,
                            "why": None if calibrator is None else calibrator.reason_,
                            "fitted_on": cal_where if calibrator else None,
                            "test_before_after": self.calibration.to_dicts()},
            "leakage_check": self.leaks,
            "directions": self.directions[0].to_dicts(),
            "pillar_importance": self.pillars.select("pillar", "label", "mean_abs_shap", "share").to_dicts(),
            "economics": {"best": self.economics.best, "plus_5pp": self.economics.plus_5pp,
                          "assumptions": self.economics.assumptions.lines() + [self.value_at_stake[2]]},
            "limitations": self._limitations(),
            "privacy": "Ids in every output are pseudonymised (salted SHA-256, set TRUSTML_SALT); raw ids and columns "
                       "the mapping marks sensitive are never printed.",
        }
        if self.fairness is not None:
            f = self.fairness
            card["fairness"] = {"selection": f.selection, "gaps": f.gaps.to_dicts(), "groups": f.groups.to_dicts()}
        if self.truth:
            card["truthfulness"] = {"spearman_pillars": self.truth["spearman"], "lever_agreement_top200": self.truth["agreement"]}
        return card

    def _split_line(self) -> str:
        sp = self.trained.metadata["trained_on"]
        if sp.get("kind") == "customers":
            if sp["test_size"] >= 1:
                return "Split: every row is a test row (a separate test file)."
            cal = (f"{sp['calibration_size']:.0%} of customers held out to calibrate" if sp["calibration_size"]
                   else "calibrated on cross-fitted predictions of the training customers")
            return (f"Split by customer (no dates): {sp['test_size']:.0%} of customers held out to test, the rest to train; "
                    f"{cal}.")
        cal = ", ".join(sp["calibration_snapshots"]) or "none"
        return (f"Split by time: trained on snapshots {sp['snapshots'][0]} to {sp['snapshots'][1]}, calibrated on {cal}, "
                f"tested on {', '.join(sp['test_snapshots'])}.")

    def _limitations(self) -> list[str]:
        out = ["Explanations describe the model, not causes: a what-if is the model's answer, not an experiment's."]
        if self.is_simulated:
            out += ["Trained and tested on simulated data: real customers differ; re-train and re-check on your own.",
                    "Ticket counts are confounded with usage (heavy users open more tickets): read them as context, not as a lever."]
        if self.feature_settings.is_flat:
            out.append("One undated snapshot: the split is by customer, not by time, so drift over time is not measured.")
        missing = [p for p in TRUST_PILLARS if p not in self.registry.pillars]
        if missing:
            out.append(f"The data has nothing on these trust pillars: {', '.join(missing)}.")
        return out

    def write(self, out: str | Path) -> Path:
        """Shareable results under `out`: features (pseudonymised ids), model, metrics, pillar importance,
        explanations, profit curve and model card. No raw id is written (see `trustml.privacy`)."""
        from trustml.explanations import explanations_frame
        from trustml.privacy import pseudonymise
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        frame = self.table.frame.with_columns(customer_id=pl.Series(pseudonymise(self.table.frame["customer_id"].to_list())))
        FeatureTable(frame, self.registry, self.table.snapshots, self.table.as_of, self.table.dropped).write(out / "features.parquet")
        self.trained.save(out / "model")
        from trustml.monitor import Reference
        Reference.fit(self.trained, self.test if self.table.is_flat else self.table.latest(), labelled=self.test,
                      card={"metrics": self.comparison.to_dicts()}).save(out / "model")
        self.comparison.write_csv(out / "metrics.csv")
        self.pillars.write_csv(out / "pillar_importance.csv")
        explanations_frame(self.trained, self.test, self.explanation).write_parquet(out / "explanations.parquet")
        self.economics.curve.write_csv(out / "profit_curve.csv")
        (out / "model_card.json").write_text(json.dumps(self.model_card(), indent=2, default=str))
        return out

    def summary(self) -> str:
        s = self.source
        if s["kind"] == "simulated":
            head = f"Simulated {s['customers']:,} customers over {s['months']} months: {s['events']:,} events (seed {s['seed']})."
        else:
            head = f"{s['name']}: {s['rows']:,} rows from {s['file']} (mapping {s['mapping']})."
        from trustml.leakage import describe_leaks
        tuning = self.trained.metadata.get("tuning")
        cal = self.trained.calibrator
        lines = [*describe_leaks(self.leaks), *self.directions[1], *([str(self.warnings)] if self.warnings else []), head,
                 f"Feature table: {self.feature_rows:,} rows x {len(self.registry)} features over {len(self.registry.pillars)} pillars.",
                 self._split_line(),
                 ("Model: LightGBM, " + (f"tuned by {len(tuning['trials'])} Optuna trials ({tuning['validation']})" if tuning
                                         else "untuned defaults") + (f"; {cal.method_} calibration ({cal.reason_})." if cal else "; not calibrated.")),
                 *([f"Fitted on a seeded sample of {sampled['customers']:,} of {sampled['of_customers']:,} training customers "
                    f"({sampled['rows']:,} of {sampled['rows_before']:,} rows; trustml.model.TRAIN_MAX_ROWS)."]
                   if (sampled := self.trained.metadata["trained_on"].get("sampled")) else []),
                 "", "Test metrics (held out, never seen in training; 95% intervals from a bootstrap over customers):"]
        comp = self.comparison.select("model", "roc_auc", "roc_auc_lo", "roc_auc_hi", "pr_auc", "brier", "top_decile_lift", "vs_model")
        with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=160, tbl_rows=20,
                       fmt_str_lengths=60):
            lines.append(str(comp))
            lines += ["", "What drives churn risk, by trust pillar (mean |SHAP|, log-odds):",
                      str(self.pillars.select("label", pl.col("mean_abs_shap").round(3), pl.col("share").round(3)))]
        if self.truth:
            t = self.truth
            lines += ["", f"Explanations vs the simulator's truth: Spearman {t['spearman']:.3f} across pillars; "
                          f"top lever agrees for {t['agreement']:.0%} of the 200 riskiest customers."]
        lines += ["", self.economics.summary(), f"  - {self.value_at_stake[2]}"]
        return "\n".join(lines)
