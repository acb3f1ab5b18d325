"""Beyond one machine: features, training, scores, SHAP and the campaign on a Dask cluster.

trustml runs on `dask.distributed`; it brings no engine of its own. Data are partitioned by
customer: a stable hash of the id (polars ``hash`` with a fixed seed, modulo the number of
partitions), so every customer's events live in one partition. Features are built per partition
with polars, with the *global* as-of date, snapshot dates and event types passed explicitly so the
partitions agree; the model is sent to the workers once as LightGBM text + JSON (no pickle of a
model) and rebuilt there; scores, SHAP values and the campaign are computed per partition.
Results are identical to the single-machine run on the same data, in the same row order.

`connect("local")` starts a `LocalCluster` (2 worker processes, 1 thread each);
`connect("tcp://host:8786")` joins an existing scheduler. A path given to `features` must be
readable by every worker (a shared file system or object store on a real cluster).

Examples
--------
>>> import tempfile
>>> from trustml.simulator import simulate_to_dir
>>> from trustml.features import Snapshots
>>> world = simulate_to_dir(300, 8, 0, tempfile.mkdtemp() + "/world")
>>> from distributed import Client
>>> client = Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None)
>>> table = features(world, Snapshots(every="2mo"), cluster=client, partitions=3)
>>> table.n_partitions, table.collect().frame.columns[:2]
(3, ['customer_id', 'snapshot_date'])
>>> client.close()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from trustml.contract import ContractError, Problem
from trustml.features import DEFAULT_SPEC, FeatureRegistry, FeatureSpec, FeatureTable, Snapshots, _feature_of, _next_month, _resolve_spec
from trustml.model import TrainedModel
from trustml.privacy import DEFAULT_SALT

__all__ = ["connect", "PartitionedTable", "partition", "features", "train", "score", "explain", "campaign",
           "model_payload", "model_from_payload", "HASH_SEED"]

HASH_SEED = 20_240_101  # fixed: the same customer always lands in the same partition (for one polars version)
_ID = "customer_id"


# --- side by side on one machine -----------------------------------------------------------

# one BLAS / OpenMP thread for each of several workers sharing the cores (Dask worker slots, the report's kernels):
# each library's own pool of all cores, times the workers, oversubscribes the cores and spins (OpenBLAS busy-waits)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _lightgbm_max_threads(n: int | None = None) -> int:
    """LightGBM's process-wide cap on its threads (``LGBM_SetMaxThreads``; -1: none): set it to `n` (when given) and
    return the cap before. Every LightGBM call stores its own ``num_threads`` in one process-wide default, read again
    inside later calls (LightGBM's ``src/utils/openmp_wrapper.cpp``): with two Python threads calling LightGBM at once,
    a call that sized its per-thread buffers for one thread can go on with the other pthread's OpenMP maximum (two
    here: only the calling thread is held to one). A test-suite run died of a segmentation fault in a native thread
    while both threads were inside LightGBM. With the cap at 1 every such read is 1.

    >>> before = _lightgbm_max_threads(1); _lightgbm_max_threads(before)
    1
    """
    import ctypes

    from lightgbm.basic import _LIB, _safe_call
    old = ctypes.c_int(0)
    _safe_call(_LIB.LGBM_GetMaxThreads(ctypes.byref(old)))
    if n is not None:
        _safe_call(_LIB.LGBM_SetMaxThreads(ctypes.c_int(n)))
    return old.value


class _OneThreadEach:
    def __init__(self):
        from threadpoolctl import threadpool_limits
        self._blas = threadpool_limits(limits=1)
        self._lightgbm = _lightgbm_max_threads(1)

    def unregister(self) -> None:
        self._blas.unregister()
        _lightgbm_max_threads(self._lightgbm)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.unregister()


def one_thread_each():
    """Hold BLAS and LightGBM in this process, and OpenMP in the calling thread, to one thread until ``.unregister()``
    (or the end of a ``with``).

    For stages that run side by side in threads (`Study.compute`): each is one core's work. LightGBM is
    given its threads explicitly (one) and capped at one (`_lightgbm_max_threads`: its thread setting is
    process-wide); OpenMP's count is per pthread, so another thread limits its own; polars keeps its own pool.

    >>> from threadpoolctl import threadpool_info
    >>> with one_thread_each():
    ...     {p["num_threads"] for p in threadpool_info() if p["user_api"] in ("blas", "openmp")} <= {1}, _lightgbm_max_threads()
    (True, 1)
    >>> _lightgbm_max_threads()
    -1
    """
    return _OneThreadEach()


# --- the cluster ------------------------------------------------------------------------------

def connect(cluster=None):
    """A `distributed.Client`: 'local' starts a LocalCluster (2 processes x 1 thread), 'tcp://...' joins one.

    A `Client` is returned as it is. Close what you opened (``client.close()`` or ``with``): for
    'local' that also stops the worker processes.
    """
    Client = _client_class()
    if isinstance(cluster, Client):
        return cluster
    if cluster in (None, "local"):
        # one polars / OpenMP thread per worker slot: two processes on two cores, not two x all cores. Dask's nanny
        # writes its pre-spawn variables (OMP_NUM_THREADS=1 and others) into this process's os.environ and leaves
        # them: every process started later (a notebook kernel, a subprocess) would run on one thread. The
        # workers have their own env; this process gets its environment back as it was.
        before = dict(os.environ)
        try:
            return Client(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          env={**ONE_THREAD, "POLARS_MAX_THREADS": "1"})
        finally:
            for k in set(os.environ) - set(before):
                del os.environ[k]
            os.environ.update(before)
    if isinstance(cluster, str) and cluster.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        try:
            return Client(cluster, timeout="20s")
        except OSError as e:
            raise ContractError([Problem("--cluster", None, f"no Dask scheduler answers at {cluster} ({e})")]) from None
    raise ContractError([Problem("--cluster", None, f"{cluster!r} is not 'local' nor a scheduler address such as tcp://host:8786")])


def _client_class():
    try:
        from distributed import Client
    except ImportError as e:
        raise ImportError("trustml on Dask needs the optional extra `scale`: pip install 'trustml[scale]' (dask[distributed])") from e
    return Client


class _Session:
    """`with _Session(cluster) as client`: a Client, closed at the end only if opened here."""

    def __init__(self, cluster):
        self.owned = not isinstance(cluster, _client_class())
        self.client = connect(cluster)

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        if self.owned:
            self.client.close()


def _n_slots(client) -> int:
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))


def _bucket(frame: pl.DataFrame, id_column: str, n: int) -> pl.Series:
    return frame.select((pl.col(id_column).cast(pl.String).hash(seed=HASH_SEED) % n).alias("_b"))["_b"]


def _split(frame: pl.DataFrame, id_column: str, n: int) -> list[pl.DataFrame]:
    """`frame` cut into `n` pieces by the hash of the customer id, each in the frame's row order."""
    groups = frame.with_columns(_bucket(frame, id_column, n)).partition_by("_b", as_dict=True, include_key=False, maintain_order=True)
    return [groups.get((p,), frame.clear()) for p in range(n)]


# --- the partitioned table ---------------------------------------------------------------------

@dataclass
class PartitionedTable:
    """A feature table held on the workers: one polars frame per customer partition.

    Each partition is sorted by `order`; `collect()` gives the single-machine `FeatureTable`, rows in
    the same order. `latest()` and `labelled()` filter on the workers. Close it (or use ``with``)
    if it opened its own client.
    """

    parts: list
    registry: FeatureRegistry
    snapshots: Snapshots
    as_of: dt.datetime
    client: object = field(repr=False)
    dropped: dict[str, str] = field(default_factory=dict)
    order: tuple[str, ...] = ("snapshot_date", _ID)
    owns_client: bool = field(default=False, repr=False)

    @property
    def n_partitions(self) -> int:
        return len(self.parts)

    def heights(self) -> list[int]:
        """Rows per partition (how even the hash spread the customers)."""
        return self.client.gather(self.client.map(_height, self.parts, pure=False))

    def collect(self) -> FeatureTable:
        """All partitions in one `FeatureTable` on this machine, in the single-machine row order."""
        frame = _concat_sorted(self.client.gather(self.parts), list(self.order))
        return FeatureTable(frame.drop("_row", strict=False), self.registry, self.snapshots, self.as_of, dict(self.dropped))

    def _map(self, fn, *args) -> PartitionedTable:
        parts = [self.client.submit(fn, p, *args, pure=False) for p in self.parts]
        return replace(self, parts=parts, owns_client=False)

    def latest(self) -> PartitionedTable:
        """The rows of the latest snapshot over all partitions: the customers to act on now."""
        last = max(d for d in self.client.gather(self.client.map(_max_date, self.parts, pure=False)) if d is not None)
        return self._map(_filter_date, last)

    def labelled(self) -> PartitionedTable:
        return self._map(_filter_labelled)

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _height(frame: pl.DataFrame | None) -> int:
    return 0 if frame is None else frame.height


def _max_date(frame: pl.DataFrame):
    return frame["snapshot_date"].max() if frame.height else None


def _filter_date(frame: pl.DataFrame, day) -> pl.DataFrame:
    return frame.filter(pl.col("snapshot_date") == day)


def _filter_labelled(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("churned").is_not_null())


def partition(table: FeatureTable | pl.DataFrame, *, cluster, partitions: int | None = None,
              id_column: str = _ID) -> PartitionedTable:
    """Send an in-memory table to the workers, cut by the hash of `id_column` (row order kept in `_row`)."""
    client = connect(cluster)
    ft = table if isinstance(table, FeatureTable) else None
    frame = (ft.frame if ft else table).with_row_index("_row")
    if id_column not in frame.columns:
        raise ContractError([Problem("features", id_column, "required column is missing")])
    n = partitions or 2 * _n_slots(client)
    pieces = [p for p in _split(frame, id_column, n) if p.height]
    futures = client.scatter(pieces, hash=False)
    reg = ft.registry if ft else FeatureRegistry(())
    return PartitionedTable(futures, reg, ft.snapshots if ft else Snapshots(), ft.as_of if ft else dt.datetime.min, client,
                            dict(ft.dropped) if ft else {}, ("_row",), owns_client=not _is_client(cluster))


def _is_client(x) -> bool:
    return isinstance(x, _client_class())


def _as_partitioned(table, cluster) -> PartitionedTable:
    return table if isinstance(table, PartitionedTable) else partition(table, cluster=cluster)


# --- features ----------------------------------------------------------------------------------

def _split_file(path: str, n: int, is_events: bool) -> tuple[list[pl.DataFrame], dict]:
    """Map side of the shuffle: one parquet part cut into `n` hash buckets, plus what the reduce needs to agree."""
    df = pl.read_parquet(path)
    if _ID not in df.columns:
        raise ContractError([Problem(path, _ID, "required column is missing")])
    stats = {"schema": dict(df.schema), "rows": df.height}
    if is_events and df.height:
        stats.update(_event_stats(df))
    return _split(df, _ID, n), stats


def _event_stats(events: pl.DataFrame | pl.LazyFrame) -> dict:
    """The first and last event time and the event types: what every partition must agree on."""
    s = events.lazy().select(pl.col("timestamp").cast(pl.Datetime("us")).min().alias("lo"), pl.col("timestamp").cast(pl.Datetime("us")).max().alias("hi"),
                      pl.col("event_type").cast(pl.String).drop_nulls().unique().implode().alias("types")).collect()
    return {"lo": s["lo"][0], "hi": s["hi"][0], "types": s["types"][0].to_list()}


def _pick(split: tuple, p: int) -> pl.DataFrame:
    return split[0][p]


def _stats(split: tuple) -> dict:
    return split[1]


def _pad_events(ev: pl.DataFrame, customers: pl.DataFrame, types: list[str], as_of: dt.datetime) -> pl.DataFrame:
    """Add one event per global event type the partition lacks, for a customer id not in the partition, at as-of.

    `build_features` keeps only the features whose event types it sees; a rare type (privacy
    incidents) can be absent from one partition. An event at the as-of date is after every
    snapshot (features see `timestamp < snapshot`) and belongs to no customer of the partition, so
    it changes no value, only which features are built.
    """
    have = set(ev["event_type"].cast(pl.String).unique().to_list()) if ev.height else set()
    missing = [t for t in types if t not in have]
    if not missing:
        return ev
    dtype = ev.schema[_ID]
    if dtype.is_integer():
        ids = pl.concat([ev[_ID], customers[_ID].cast(dtype)])
        sentinel = (ids.max() + 1) if ids.len() else 0
    else:
        sentinel = "\x00trustml-pad"
    cols = {c: pl.Series(c, [None] * len(missing), dtype=t) for c, t in ev.schema.items()}
    cols[_ID] = pl.Series(_ID, [sentinel] * len(missing)).cast(dtype)
    cols["timestamp"] = pl.Series("timestamp", [as_of] * len(missing)).cast(ev.schema["timestamp"])
    cols["event_type"] = pl.Series("event_type", missing, dtype=pl.String)
    return pl.concat([ev.with_columns(pl.col("event_type").cast(pl.String)), pl.DataFrame(cols)], how="vertical")


def _features_part(customers: list[pl.DataFrame], events: list[pl.DataFrame], snapshots: Snapshots,
                   spec: list[FeatureSpec], as_of: dt.datetime, types: list[str]) -> pl.DataFrame | None:
    """Reduce side: one partition's customers and events in, its feature rows out (sorted like the whole)."""
    from trustml.features import build_features
    cust = pl.concat(customers, how="vertical")
    if not cust.height:
        return None
    ev = _pad_events(pl.concat(events, how="vertical"), cust, types, as_of)
    with _in_memory_engine():
        return build_features(cust, ev, snapshots, spec, as_of=as_of).frame


_ENGINE: dict = {"users": 0}
_ENGINE_LOCK = threading.Lock()


@contextlib.contextmanager
def _in_memory_engine():
    """polars' in-memory engine while any feature task of this process runs, then the setting it had.

    The default (streaming) engine sums a customer's values in pieces whose edges depend on how big
    the whole table is, so the last bit of a float sum would depend on the partitioning; the
    in-memory engine sums each customer's values in one go. Counted, so that one task's thread does
    not switch the engine back while another task of the same worker is still building.
    """
    with _ENGINE_LOCK:
        if _ENGINE["users"] == 0:
            _ENGINE["config"] = pl.Config(engine_affinity="in-memory")
        _ENGINE["users"] += 1
    try:
        yield
    finally:
        with _ENGINE_LOCK:
            _ENGINE["users"] -= 1
            if _ENGINE["users"] == 0:
                _ENGINE.pop("config").__exit__(None, None, None)


def _parts_of(data_dir: Path, name: str) -> list[str]:
    files = sorted(str(p) for p in (data_dir / name).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no {name}/*.parquet (write the tables with `trustml simulate` or `write_world`)")
    return files


def _whole_data_plan(e_stats: list[dict], customer_schema, snapshots: Snapshots, spec, as_of):
    """What `build_features` would work out from the whole data, fixed for every partition: (event types, as-of,
    kept specs, dropped specs, snapshots with their dates and activity events)."""
    lo, hi = min(s["lo"] for s in e_stats), max(s["hi"] for s in e_stats)
    types = sorted({t for s in e_stats for t in s["types"]})
    as_of = hi + dt.timedelta(microseconds=1) if as_of is None else as_of
    as_of = as_of if isinstance(as_of, dt.datetime) else dt.datetime.combine(as_of, dt.time())
    kept, dropped = _resolve_spec(spec, set(types), set(customer_schema))
    if snapshots.churn == "cancellation" and "cancellation" not in types:
        raise ContractError([Problem("events", "event_type",
                                     "no 'cancellation' events: use Snapshots(churn='inactivity') for non-contractual data")])
    glob = replace(snapshots, start=snapshots.start or _next_month(lo.date()), end=snapshots.end or as_of.date(),
                   activity_events=tuple(snapshots.activity_events or sorted(set(types) - {"cancellation"})))
    return types, as_of, kept, dropped, glob


def features_in_parts(customers: pl.DataFrame, events: pl.DataFrame, snapshots: Snapshots | None = None,
                      spec: Sequence[FeatureSpec] = DEFAULT_SPEC, *, as_of: dt.datetime | dt.date | None = None,
                      parts: int = 2, progress: bool = False) -> FeatureTable:
    """`features` in this process, without Dask: the same hash partitions of customers built one after another, so
    the memory a build needs is one partition's (`build_features` on the whole table needs several times the
    table; `trustml.study` uses this beyond `FEATURE_PART_CUSTOMERS` customers). Equal to `build_features` up to the
    last bits of float sums (see `features`).

    Examples
    --------
    >>> from trustml.simulator import simulate
    >>> from trustml.features import build_features
    >>> w = simulate(300, 8, 0)
    >>> parted = features_in_parts(w.customers, w.events, as_of=w.as_of, parts=3)
    >>> whole = build_features(w.customers, w.events, as_of=w.as_of)
    >>> parted.frame.shape == whole.frame.shape and parted.registry.names == whole.registry.names
    True
    """
    c_bucket, e_bucket = _bucket(customers, _ID, parts), _bucket(events, _ID, parts)
    # one partition's rows at a time (a split of the whole event log at once would copy it)
    pieces = ((customers.filter(c_bucket == p), events.filter(e_bucket == p)) for p in range(parts))
    return _features_of_pieces(pieces, parts, _event_stats(events), customers.schema, snapshots, spec, as_of, progress)


def features_in_blocks(folder: str | Path, snapshots: Snapshots | None = None, spec: Sequence[FeatureSpec] = DEFAULT_SPEC, *,
                       as_of: dt.datetime | dt.date | None = None, each=None, progress: bool = False) -> FeatureTable:
    """`features_in_parts` for tables on disk whose customers come in blocks: part k of ``customers/`` and part k of
    ``events/`` hold the same customers (as `trustml.simulator.simulate_to_dir` writes them). One block is read at a
    time, so neither table is ever in memory whole; `each(customers, events)` is called on every block (checks,
    fingerprints). An event of a customer not in its block's customers is an error, not a silent drop.

    Examples
    --------
    >>> import tempfile
    >>> from trustml.simulator import simulate, simulate_to_dir
    >>> from trustml.features import build_features
    >>> tmp = tempfile.TemporaryDirectory()
    >>> folder = simulate_to_dir(300, 8, seed=0, out=Path(tmp.name) / "world")
    >>> w = simulate(300, 8, 0)
    >>> features_in_blocks(folder, as_of=w.as_of).frame.equals(build_features(w.customers, w.events, as_of=w.as_of).frame)
    True
    >>> tmp.cleanup()
    """
    folder = Path(folder)
    c_files, e_files = _parts_of(folder, "customers"), _parts_of(folder, "events")
    if len(c_files) != len(e_files):
        raise ValueError(f"{folder}: {len(c_files)} customer parts but {len(e_files)} event parts; blocks pair them one to one")

    def pieces():
        for c_file, e_file in zip(c_files, e_files, strict=True):
            customers, events = pl.read_parquet(c_file), pl.read_parquet(e_file)
            strays = events.select(_ID).unique().join(customers.select(_ID), on=_ID, how="anti").height
            if strays:
                raise ValueError(f"{e_file}: events of {strays:,} customers not in {Path(c_file).name}: not a block layout")
            if each is not None:
                each(customers, events)
            yield customers, events

    stats = _event_stats(pl.scan_parquet(e_files))
    return _features_of_pieces(pieces(), len(c_files), stats, pl.scan_parquet(c_files[0]).collect_schema(), snapshots, spec,
                               as_of, progress)


def _features_of_pieces(pieces, n: int, stats: dict, customer_schema, snapshots: Snapshots | None, spec, as_of,
                        progress: bool) -> FeatureTable:
    """Features of each (customers, events) piece in turn, with what the whole data fixes (as-of, dates, types)."""
    snapshots = snapshots or Snapshots()
    types, as_of, kept, dropped, glob = _whole_data_plan([stats], customer_schema, snapshots, spec, as_of)
    if progress:
        from tqdm.auto import tqdm
        pieces = tqdm(pieces, desc="features", unit="part", total=n)
    frames = [f for f in (_features_part([c], [e], glob, kept, as_of, types) for c, e in pieces) if f is not None]
    frame = _concat_sorted(frames, ["snapshot_date", _ID])
    return FeatureTable(frame, FeatureRegistry(tuple(_feature_of(s) for s in kept)), snapshots, as_of, dropped)


def features(data_dir: str | Path, snapshots: Snapshots | None = None, spec: Sequence[FeatureSpec] = DEFAULT_SPEC, *, cluster,
             as_of: dt.datetime | dt.date | None = None, partitions: int | None = None) -> PartitionedTable:
    """Point-in-time features of the tables under `data_dir` (customers/ and events/ parquet parts), per partition.

    Every input part is cut by the hash of ``customer_id`` into `partitions` buckets (default: two
    per worker thread, at least one per events part); bucket ``p`` of every part meets on one worker
    (Dask moves them) and `build_features` runs there with the global as-of date (default, as on
    one machine: just after the last event), snapshot dates, activity events and feature list.
    Returns a `PartitionedTable`; ``.collect()`` equals `build_features` on the whole data.
    """
    snapshots = snapshots or Snapshots()
    if snapshots.churn == "label":
        raise ValueError("distributed.features builds snapshots from event logs; a flat table (churn='label') fits one machine")
    data_dir = Path(data_dir)
    cust_files, ev_files = _parts_of(data_dir, "customers"), _parts_of(data_dir, "events")
    session = _Session(cluster)
    client = session.client
    try:
        n = partitions or max(2 * _n_slots(client), len(ev_files))
        c_maps = [client.submit(_split_file, f, n, False, pure=False) for f in cust_files]
        e_maps = [client.submit(_split_file, f, n, True, pure=False) for f in ev_files]
        c_stats = client.gather([client.submit(_stats, m) for m in c_maps])
        e_stats = [s for s in client.gather([client.submit(_stats, m) for m in e_maps]) if s["rows"]]
        if not e_stats:
            raise ContractError([Problem("events", None, "table is empty")])
        for need in ("timestamp", "event_type"):
            if need not in e_stats[0]["schema"]:
                raise ContractError([Problem("events", need, "required column is missing")])
        if "signup_date" not in c_stats[0]["schema"]:
            raise ContractError([Problem("customers", "signup_date", "required column is missing")])
        types, as_of, kept, dropped, glob = _whole_data_plan(e_stats, c_stats[0]["schema"], snapshots, spec, as_of)
        parts = []
        for p in range(n):
            cs = [client.submit(_pick, m, p) for m in c_maps]
            es = [client.submit(_pick, m, p) for m in e_maps]
            parts.append(client.submit(_features_part, cs, es, glob, kept, as_of, types, pure=False))
        heights = client.gather(client.map(_height, parts, pure=False))
        parts = [f for f, h in zip(parts, heights, strict=True) if h]
        del c_maps, e_maps
        registry = FeatureRegistry(tuple(_feature_of(s) for s in kept))
        return PartitionedTable(parts, registry, snapshots, as_of, client, dropped, owns_client=session.owned)
    except BaseException:
        session.__exit__()
        raise


# --- the model, broadcast ----------------------------------------------------------------------

def model_payload(trained: TrainedModel) -> tuple[str, str]:
    """The model as (LightGBM text, JSON) strings: what `TrainedModel.save` writes, to send to workers."""
    with tempfile.TemporaryDirectory(prefix="trustml-model-") as d:
        trained.save(d)
        return (Path(d, "model.txt").read_text(), Path(d, "model.json").read_text())


_MODELS: dict[str, TrainedModel] = {}


def model_from_payload(payload: tuple[str, str]) -> TrainedModel:
    """Rebuild a `TrainedModel` from `model_payload` (cached per process: each worker loads a model once)."""
    key = hashlib.sha256((payload[0] + "\x00" + payload[1]).encode()).hexdigest()
    if key not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = _load(payload)
    return _MODELS[key]


def _load(payload: tuple[str, str]) -> TrainedModel:
    with tempfile.TemporaryDirectory(prefix="trustml-model-") as d:
        Path(d, "model.txt").write_text(payload[0])
        Path(d, "model.json").write_text(payload[1])
        return TrainedModel.load(d)


def _broadcast(client, trained: TrainedModel):
    # a fresh key each time: a hashed key reused right after the last call released it can vanish mid-replication
    return client.scatter([model_payload(trained)], broadcast=True, hash=False)[0]


# --- training on one worker --------------------------------------------------------------------

def _concat_sorted(frames: list[pl.DataFrame], by: list[str]) -> pl.DataFrame:
    """`frames` stacked and sorted by `by` (unique keys), one column at a time: the memory of the table and one column,
    where ``concat(frames).sort(by)`` gathers every column at once, twice the table (at a million customers, 3.7 GB
    more). Empties `frames`: the caller gives its pieces away, so each column of them is freed once gathered.

    Examples
    --------
    >>> parts = [pl.DataFrame({"k": [3, 1], "v": ["c", "a"]}), pl.DataFrame({"k": [2], "v": ["b"]})]
    >>> _concat_sorted(parts, ["k"])["v"].to_list(), parts
    (['a', 'b', 'c'], [])
    """
    whole = pl.concat(frames, how="vertical")   # chunks that point into the pieces, no copy
    frames.clear()
    order = whole.select(pl.arg_sort_by(by)).to_series()
    columns = []
    for name in whole.columns:
        columns.append(whole[name].gather(order))
        whole = whole.drop(name)   # the last reference to the pieces' column: freed
    return pl.DataFrame(columns)


def _sample_part(frame: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    lab = frame.filter(pl.col("churned").is_not_null())
    if fraction >= 1:
        return lab
    keep = (pl.col(_ID).cast(pl.String).hash(seed=seed) % 1_000_000) < int(round(fraction * 1_000_000))
    return lab.filter(keep)


def _train_on_worker(pieces: list[pl.DataFrame], order: tuple[str, ...], registry: FeatureRegistry, snapshots: Snapshots,
                     as_of: dt.datetime, dropped: dict, split, params: dict) -> tuple[tuple[str, str], object, dict]:
    from trustml.model import train as train_one
    frame = _concat_sorted(pieces, list(order)).drop("_row", strict=False)
    table = FeatureTable(frame, registry, snapshots, as_of, dict(dropped))
    trained, split = train_one(table, split, **params)
    info = {"rows": frame.height, "customers": frame[_ID].n_unique()}
    return model_payload(trained), split, info


def train(table: PartitionedTable | FeatureTable, split=None, *, cluster=None, sample: float = 1.0, seed: int = 0,
          **params) -> tuple[TrainedModel, object]:
    """Train on one worker from the labelled rows of a sample of customers (all of them by default).

    The sample keeps whole customers: those whose id hashes (with `seed`) below `sample`; it is
    stated in ``metadata['trained_on']['sample']``. `split` and `params` go to `trustml.model.train`
    (its defaults apply). With ``sample=1`` the model is the one a single machine trains.
    Measured on 20k customers (benchmarks/scale.py), this beats `lightgbm.dask`, which has no early
    stopping and gives a different model for every number of workers.
    """
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be in (0, 1], got {sample}")
    with _Session(cluster if not isinstance(table, PartitionedTable) else table.client) as client:
        pt = _as_partitioned(table, client)
        pieces = [client.submit(_sample_part, p, sample, seed, pure=False) for p in pt.parts]
        fut = client.submit(_train_on_worker, pieces, pt.order, pt.registry, pt.snapshots, pt.as_of, pt.dropped, split, params, pure=False)
        payload, split, info = fut.result()
        total = sum(client.gather(client.map(_n_customers, pt.parts, pure=False)))
    trained = _load(payload)
    trained.metadata.setdefault("trained_on", {})["sample"] = {
        "method": "whole customers whose id hashes below the fraction (polars hash, seed)", "fraction": sample, "seed": seed,
        "customers": info["customers"], "of_customers": total, "labelled_rows": info["rows"], "engine": "dask.distributed, one worker"}
    return trained, split


def _n_customers(frame: pl.DataFrame) -> int:
    return frame[_ID].n_unique()


# --- scores, SHAP, campaign per partition --------------------------------------------------------

def _keys(frame: pl.DataFrame, order: tuple[str, ...]) -> pl.DataFrame:
    return frame.select(list(order))


def _score_part(payload, frame: pl.DataFrame, order: tuple[str, ...], calibrated: bool) -> tuple[pl.DataFrame, np.ndarray]:
    trained = model_from_payload(payload)
    return _keys(frame, order), trained.predict_risk(frame, calibrated=calibrated)


def _permutation(keys: list[pl.DataFrame], order: tuple[str, ...]) -> np.ndarray:
    """Where each row of the concatenated partitions goes in the single-machine order."""
    return pl.concat(keys, how="vertical").with_row_index("_i").sort(list(order))["_i"].to_numpy()


def score(trained: TrainedModel, table: PartitionedTable | FeatureTable | pl.DataFrame, *, cluster=None,
          calibrated: bool = True) -> np.ndarray:
    """Churn risk of every row, scored on the workers with the model broadcast: `predict_risk`'s result, same order."""
    with _Session(table.client if isinstance(table, PartitionedTable) else cluster) as client:
        pt = _as_partitioned(table, client)
        model = _broadcast(client, trained)
        out = client.gather([client.submit(_score_part, model, p, pt.order, calibrated, pure=False) for p in pt.parts])
    if not out:
        return np.zeros(0)
    perm = _permutation([k for k, _ in out], pt.order)
    return np.concatenate([r for _, r in out])[perm]


def _explain_part(payload, frame: pl.DataFrame, order: tuple[str, ...], out: str | None, index: int, salt: str):
    from trustml.explanations import explain as explain_one
    from trustml.explanations import explanations_frame
    trained = model_from_payload(payload)
    ex = explain_one(trained, frame)
    if out is not None:
        os.environ["TRUSTML_SALT"] = salt  # pseudonyms as on the machine that asked, whatever the worker's environment
        explanations_frame(trained, frame, ex).write_parquet(Path(out) / f"part-{index:05d}.parquet")
        return frame.height
    return _keys(frame, order), ex.values, ex.base_values, ex.data


def _salt() -> str:
    """The salt `pseudonymise` uses in this process (argument-less), to use the same on the workers."""
    from trustml import privacy
    return os.environ.get("TRUSTML_SALT") or getattr(privacy, "_secret", None) or DEFAULT_SALT


def explain(trained: TrainedModel, table: PartitionedTable | FeatureTable | pl.DataFrame, *, cluster=None, out: str | Path | None = None):
    """Exact TreeSHAP per row on the workers: the `shap.Explanation` of `trustml.explanations.explain`, same order.

    With `out` (a folder every worker can write to), each partition writes its
    `explanations_frame` as ``part-NNNNN.parquet`` there instead and the number of rows is
    returned: nothing of size passes through this machine.
    """
    import shap
    with _Session(table.client if isinstance(table, PartitionedTable) else cluster) as client:
        pt = _as_partitioned(table, client)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
        model = _broadcast(client, trained)
        salt = _salt()
        res = client.gather([client.submit(_explain_part, model, p, pt.order, None if out is None else str(out), i, salt, pure=False)
                             for i, p in enumerate(pt.parts)])
    if out is not None:
        return sum(res)
    names = trained.registry.names
    if not res:
        return shap.Explanation(values=np.zeros((0, len(names))), base_values=np.zeros(0), data=np.zeros((0, len(names))),
                                feature_names=names, output_names="log-odds of churn")
    perm = _permutation([r[0] for r in res], pt.order)
    cat = lambda k: np.concatenate([r[k] for r in res])[perm]  # noqa: E731
    return shap.Explanation(values=cat(1), base_values=cat(2), data=cat(3), feature_names=names, output_names="log-odds of churn")


def _values(frame: pl.DataFrame, value) -> np.ndarray:
    if "_value" in frame.columns:
        return frame["_value"].cast(pl.Float64).to_numpy()
    if callable(value):
        return np.broadcast_to(np.asarray(value(frame), dtype=float), (frame.height,))
    if isinstance(value, str):
        return frame[value].cast(pl.Float64).fill_null(0).to_numpy()
    return np.full(frame.height, float(value))


def _top_part(payload, frame: pl.DataFrame, order: tuple[str, ...], top_n: int, id_column: str) -> pl.DataFrame:
    """Phase 1: a partition's `top_n` riskiest rows (local index, risk, order keys, id)."""
    if frame[id_column].n_unique() < frame.height:
        raise ValueError(f"campaign: {id_column} repeats ({frame.height} rows for {frame[id_column].n_unique()} customers); "
                         "pass one row per customer, e.g. the latest snapshot")
    risk = model_from_payload(payload).predict_risk(frame)
    top = np.argsort(-risk, kind="stable")[:top_n]
    ids = frame[id_column].gather(top)
    return pl.concat([pl.DataFrame({"_local": top, "_risk": risk[top], "_id": ids}), _keys(frame, order)[top]],
                     how="horizontal")


def _plan_part(payload, frame: pl.DataFrame, local: list[int], value, kw: dict) -> pl.DataFrame:
    """Phase 2: the best action for the chosen rows of a partition, given riskiest first."""
    from trustml.whatif import campaign as campaign_one
    sub = frame[local]
    v = _values(frame, value)[local]
    # no id column: campaign names rows by position (0, 1, ...), which the caller maps back to customers
    return campaign_one(model_from_payload(payload), sub.drop(kw["id_column"], strict=False), v, top_n=len(local),
                        costs=kw["costs"], max_levers=kw["max_levers"], grid=kw["grid"], id_column="\x00none")


def campaign(trained: TrainedModel, table: PartitionedTable | pl.DataFrame, value: float | str | np.ndarray | Callable = 100.0, *,
             cluster=None, top_n: int = 100, costs: dict | None = None, max_levers: int = 2, grid: int = 5,
             id_column: str = _ID) -> pl.DataFrame:
    """`trustml.whatif.campaign` on the workers: the top-N at-risk customers of all partitions, best action each.

    Pass one row per customer (``table.latest()``). `value`: one number for all, a column name,
    a function of a partition's frame returning one value per row (e.g. ``lambda f: value_of(f,
    None, 0.03)[0]``) or, for an in-memory frame, an array aligned with its rows. Each partition
    ranks its own rows; the global top N are chosen here from the partitions' top N; each
    partition then searches the best action for its chosen customers. Ids are pseudonymised.
    Actions are ranked by the model's association (the causal ranking of `whatif.campaign(effects=...)`
    needs the event log in one place and is not distributed).
    """
    from trustml.privacy import pseudonymise
    if isinstance(value, np.ndarray | list) and not isinstance(table, PartitionedTable):
        table = table.with_columns(_value=pl.Series(np.broadcast_to(np.asarray(value, dtype=float), (table.height,))))
    elif isinstance(value, np.ndarray | list):
        raise ValueError("campaign on a PartitionedTable: give value as a number, a column name or a function of a partition")
    kw = {"costs": costs or {}, "max_levers": max_levers, "grid": grid, "id_column": id_column}
    with _Session(table.client if isinstance(table, PartitionedTable) else cluster) as client:
        pt = _as_partitioned(table, client)
        model = _broadcast(client, trained)
        tops = client.gather([client.submit(_top_part, model, p, pt.order, top_n, id_column, pure=False) for p in pt.parts])
        cand = pl.concat([t.with_columns(_part=pl.lit(i, pl.Int64)) for i, t in enumerate(tops)], how="vertical")
        cand = (cand.sort(["_risk", *pt.order], descending=[True] + [False] * len(pt.order)).head(top_n)
                .with_row_index("_g"))
        plans = []
        for i, p in enumerate(pt.parts):
            mine = cand.filter(pl.col("_part") == i)  # already riskiest first (global order)
            if mine.height:
                plans.append((mine, client.submit(_plan_part, model, p, mine["_local"].to_list(), value, kw, pure=False)))
        results = client.gather([f for _, f in plans])
    if not plans:
        raise ValueError("campaign: the table has no rows")
    cols = results[0].columns  # as `whatif.campaign` returns them
    frames = []
    for (mine, _), res in zip(plans, results, strict=True):
        g = mine["_g"].to_numpy()[res["customer"].cast(pl.Int64).to_numpy()]
        frames.append(res.with_columns(_g=pl.Series(g)))
    out = pl.concat(frames, how="vertical").sort("_g")
    names = dict(zip(cand["_g"].to_list(), pseudonymise(cand["_id"].to_list()), strict=True))
    out = out.with_columns(customer=pl.col("_g").replace_strict(names, return_dtype=pl.String)).drop("_g")
    out = out.sort("expected_value", descending=True, maintain_order=True)
    return out.with_columns(rank=pl.int_range(1, pl.len() + 1)).select(cols)
