"""Optional experiment tracking with MLflow: compare runs month to month.

When `mlflow` is importable *and* a tracking URI is given (argument, or the environment
variable ``MLFLOW_TRACKING_URI``), `log_run` records parameters, metrics, the model card and
the model's artifacts: LightGBM's text model (``model.txt``) and the JSON beside it
(``model.json``, ``reference.json``). Pickles are refused. Otherwise it does nothing and says
why in the returned `Tracked.note`: tracking never fails a training run or a report.

``pip install mlflow-skinny`` is enough (the client, no server). A local folder works as a
store (``file:///path/mlruns``); MLflow keeps that backend in maintenance mode and asks for
``MLFLOW_ALLOW_FILE_STORE=true``, which `log_run` sets for the call only and says so.

Examples
--------
>>> metrics_of({"metrics": [{"model": "lightgbm (calibrated)", "roc_auc": 0.71, "n": 900}]})
{'test.lightgbm.roc_auc': 0.71, 'test.lightgbm.n': 900.0}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Tracked", "tracking_uri", "mlflow_available", "log_run", "log_model", "params_of", "metrics_of", "drift_metrics"]

_FORBIDDEN = (".pkl", ".pickle", ".joblib", ".sav", ".dill", ".cloudpickle")
_MODEL_FILES = ("model.txt", "model.json", "reference.json")


@dataclass
class Tracked:
    """What `log_run` did: whether it logged, where, the run id, and a note saying why not (or what it did)."""

    logged: bool
    note: str
    run_id: str | None = None
    uri: str | None = None
    artifacts: list[str] = field(default_factory=list)


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def tracking_uri(uri: str | None = None) -> str | None:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else None (no tracking)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _key(name: str) -> str:
    """An MLflow-safe metric or parameter name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]+", "_", str(name)).strip("_")[:250]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def params_of(trained) -> dict:
    """A trained model's parameters and training split, flattened for logging (values as text)."""
    meta = trained.metadata.get("trained_on", {})
    params = {f"model.{k}": v for k, v in trained.model.get_params().items() if k != "monotone_constraints"}
    params["model.n_iter"] = getattr(trained.model, "n_iter_", None)
    params["model.features"] = len(trained.registry)
    params["model.calibration"] = None if trained.calibrator is None else getattr(trained.calibrator, "method_", None)
    params.update({f"data.{k}": v for k, v in _flat(meta).items()})
    return {_key(k): (json.dumps(v) if isinstance(v, list | tuple) else str(v)) for k, v in params.items()}


def metrics_of(card: dict) -> dict[str, float]:
    """Numeric metrics of a model card (`Study.model_card()`): each model's test metrics, pillar shares, economics."""
    out = {}
    for row in card.get("metrics", []):
        name = _key(str(row.get("model", "model")).split(" (")[0].replace(" ", "_"))
        out.update({f"test.{name}.{k}": float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    for row in card.get("pillar_importance", []):
        if isinstance(row.get("share"), int | float):
            out[f"pillar_share.{row['pillar']}"] = float(row["share"])
    best = (card.get("economics") or {}).get("best") or {}
    out.update({f"economics.{k}": float(v) for k, v in best.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    truth = card.get("truthfulness") or {}
    out.update({f"truth.{k}": float(v) for k, v in truth.items() if isinstance(v, int | float)})
    return {_key(k): v for k, v in out.items()}


def drift_metrics(report) -> dict[str, float]:
    """A `trustml.monitor.DriftReport` as metrics: PSI per pillar and of the risk, realised churn rate and AUC."""
    out = {f"drift.psi.{r['pillar']}": float(r["psi"]) for r in report.pillars.iter_rows(named=True)}
    out["drift.psi.risk"] = float(report.risk["psi"])
    out.update({f"drift.{_key(r['metric'])}.realised": float(r["realised"]) for r in report.performance.iter_rows(named=True)})
    return {_key(k): v for k, v in out.items()}


@contextlib.contextmanager
def _file_store_allowed(uri: str):
    """MLflow 3 refuses a local folder store unless MLFLOW_ALLOW_FILE_STORE is set: set it for this call only."""
    local = uri.startswith("file:") or "://" not in uri
    if not local or os.environ.get("MLFLOW_ALLOW_FILE_STORE"):
        yield False
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield True
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def log_run(*, params: dict | None = None, metrics: dict | None = None, card: dict | None = None, model_dir: str | Path | None = None,
            artifacts=(), uri: str | None = None, experiment: str = "trustml", run_name: str | None = None,
            tags: dict | None = None) -> Tracked:
    """Log one run to MLflow if it is installed and a tracking URI is set; otherwise do nothing and say why.

    params: logged as text; metrics: numbers; card: the model card, logged as ``model_card.json``;
    model_dir: a saved model's folder, whose ``model.txt``, ``model.json`` (and ``reference.json``
    if present) are logged under ``model/``; artifacts: other files (JSON, CSV, parquet, text).
    A pickle (.pkl, .pickle, .joblib, ...) is refused with a ValueError, before anything is logged.
    """
    files = [Path(a) for a in artifacts]
    if model_dir is not None:
        mdir = Path(model_dir)
        if not (mdir / "model.txt").exists():
            raise FileNotFoundError(f"{mdir}: not a saved trustml model (no model.txt)")
        files_model = [mdir / n for n in _MODEL_FILES if (mdir / n).exists()]
    else:
        files_model = []
    bad = [str(f) for f in files + files_model if f.suffix.lower() in _FORBIDDEN]
    if bad:
        raise ValueError(f"tracking: refusing to log pickled artifacts {bad}; trustml saves models as LightGBM text + JSON")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"tracking: no such artifact(s) {missing}")
    target = tracking_uri(uri)
    if target is None:   # checked first: importing MLflow only to learn there is nowhere to log took 1.6 s a report
        return Tracked(False, "no tracking URI (pass uri= or set MLFLOW_TRACKING_URI): nothing logged")
    if not mlflow_available():
        return Tracked(False, "mlflow is not installed (pip install mlflow-skinny): nothing logged")
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    with _file_store_allowed(target) as allowed:
        client = MlflowClient(tracking_uri=target)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name, tags={str(k): str(v) for k, v in (tags or {}).items()})
        rid = run.info.run_id
        try:
            import time
            now = int(time.time() * 1000)
            ps = [Param(_key(k), str(v)[:6000]) for k, v in (params or {}).items()]
            ms = [Metric(_key(k), float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
            for i in range(0, max(len(ps), len(ms)), 100):
                client.log_batch(rid, metrics=ms[i:i + 100], params=ps[i:i + 100])
            logged = []
            if card is not None:
                client.log_dict(rid, json.loads(json.dumps(card, default=str)), "model_card.json")
                logged.append("model_card.json")
            for f in files_model:
                client.log_artifact(rid, str(f), "model")
                logged.append(f"model/{f.name}")
            for f in files:
                client.log_artifact(rid, str(f))
                logged.append(f.name)
            client.set_terminated(rid)
        except BaseException:
            client.set_terminated(rid, status="FAILED")
            raise
    note = f"logged run {rid} to {target} (experiment '{experiment}')"
    if allowed:
        note += "; local folder store: MLFLOW_ALLOW_FILE_STORE set for this call (MLflow recommends a database store)"
    return Tracked(True, note, rid, target, logged)


def log_model(trained, model_dir: str | Path, *, card: dict | None = None, drift=None, uri: str | None = None,
              experiment: str = "trustml", run_name: str | None = None) -> Tracked:
    """Log a saved model: its parameters, the card's metrics (and a drift report's), the card and the model files.

    For `trustml train` (after `trained.save(model_dir)`) and `trustml report` (with the model card).
    """
    metrics = metrics_of(card) if card else {}
    if drift is not None:
        metrics.update(drift_metrics(drift))
    return log_run(params=params_of(trained), metrics=metrics, card=card, model_dir=model_dir, uri=uri, experiment=experiment,
                   run_name=run_name, tags={"trustml.fingerprint": trained.metadata.get("trained_on", {}).get("fingerprint", "")})
