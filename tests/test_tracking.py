import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trustml.features import FeatureRegistry, FeatureSpec
from trustml.model import ChurnModel, TrainedModel
from trustml.tracking import Tracked, drift_metrics, log_model, log_run, metrics_of, params_of, tracking_uri


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model saved the usual way (model.txt + model.json), without the training pipeline."""
    from trustml.features import _feature_of
    rng = np.random.default_rng(0)
    X = pl.DataFrame({"promise_broken__count_90d": rng.poisson(0.5, 600).astype(float), "usage__count_30d": rng.poisson(5, 600).astype(float)})
    y = (rng.random(600) < 0.1 + 0.2 * (X["promise_broken__count_90d"].to_numpy() > 0)).astype(int)
    reg = FeatureRegistry(tuple(_feature_of(s) for s in (FeatureSpec("promise_broken", "count", 90), FeatureSpec("usage", "count", 30))))
    trained = TrainedModel(ChurnModel(n_estimators=20).fit(X, y), reg, None, {"trained_on": {"fingerprint": "abc", "rows": 600}})
    path = tmp_path_factory.mktemp("model")
    trained.save(path)
    return trained, path


def test_no_uri_is_a_no_op_with_a_note(monkeypatch, saved):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() is None
    t = log_model(saved[0], saved[1])
    assert isinstance(t, Tracked) and not t.logged and t.run_id is None
    assert "nothing logged" in t.note


def test_without_mlflow_it_says_so(monkeypatch, saved):
    import builtins
    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("no mlflow here")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    t = log_run(params={"a": 1}, uri="file:///nowhere")
    assert not t.logged and "mlflow is not installed" in t.note


def test_no_uri_says_so_without_importing_mlflow(monkeypatch):
    """With nowhere to log, MLflow is not imported at all (that import alone took 1.6 s of every report)."""
    import builtins
    real = builtins.__import__

    def refuse_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise AssertionError("mlflow imported with no tracking URI")
        return real(name, *args, **kwargs)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(builtins, "__import__", refuse_mlflow)
    t = log_run(params={"a": 1})
    assert not t.logged and "no tracking URI" in t.note


def test_pickles_are_refused_before_anything_is_logged(tmp_path):
    f = tmp_path / "model.pkl"
    f.write_bytes(b"not really")
    with pytest.raises(ValueError, match="pickled"):
        log_run(artifacts=[f], uri=(tmp_path / "store").as_uri())
    assert not (tmp_path / "store").exists()


def test_card_metrics_and_params_are_flat_numbers_and_text(saved):
    card = {"metrics": [{"model": "lightgbm (calibrated)", "roc_auc": 0.7, "brier": None, "n": 10},
                        {"model": "logistic regression", "roc_auc": 0.65}],
            "pillar_importance": [{"pillar": "promises", "share": 0.4}], "economics": {"best": {"expected_profit": 123.0, "roi": 1.5}}}
    m = metrics_of(card)
    assert m == {"test.lightgbm.roc_auc": 0.7, "test.lightgbm.n": 10.0, "test.logistic_regression.roc_auc": 0.65,
                 "pillar_share.promises": 0.4, "economics.expected_profit": 123.0, "economics.roi": 1.5}
    p = params_of(saved[0])
    assert p["model.n_estimators"] == "20" and p["data.rows"] == "600" and all(isinstance(v, str) for v in p.values())


def test_logs_params_metrics_card_and_text_model_to_a_local_store(tmp_path, monkeypatch, saved):
    mlflow = pytest.importorskip("mlflow", reason="mlflow not installed: `pip install mlflow-skinny` to test tracking")
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    trained, path = saved
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    card = {"metrics": [{"model": "lightgbm (calibrated)", "roc_auc": 0.71}], "left_out": {}}
    extra = tmp_path / "metrics.csv"
    extra.write_text("model,roc_auc\nlightgbm,0.71\n")
    t = log_model(trained, path, card=card, run_name="month 1")
    t2 = log_run(params={"month": 2}, metrics={"test.lightgbm.roc_auc": 0.69}, artifacts=[extra], run_name="month 2")
    assert t.logged and t2.logged and t.uri == uri and "MLFLOW_ALLOW_FILE_STORE" in t.note
    import os
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set for the call only
    client = MlflowClient(tracking_uri=uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = client.get_run(t.run_id)
    assert run.data.metrics["test.lightgbm.roc_auc"] == pytest.approx(0.71)
    assert run.data.params["model.n_estimators"] == "20" and run.info.status == "FINISHED"
    files = {a.path for a in client.list_artifacts(t.run_id, "model")}
    assert files == {"model/model.txt", "model/model.json"}
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)
    local = client.download_artifacts(t.run_id, "model_card.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["metrics"][0]["roc_auc"] == 0.71
    # the text model logged is the one saved, byte for byte
    model_txt = client.download_artifacts(t.run_id, "model/model.txt", str(tmp_path / "dl2"))
    assert Path(model_txt).read_text() == (path / "model.txt").read_text()
    # both months are in one experiment, so runs compare side by side
    exp = client.get_experiment_by_name("trustml")
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_name for r in runs} == {"month 1", "month 2"}
    assert mlflow.__version__


def test_drift_metrics_from_a_report():
    from trustml.monitor import DriftReport, Thresholds
    pillars = pl.DataFrame({"pillar": ["transparency", "promises"], "psi": [0.3, 0.01]})
    perf = pl.DataFrame({"metric": ["churn rate", "roc_auc"], "realised": [0.05, 0.66]})
    rep = DriftReport(pl.DataFrame(), pillars, {"psi": 0.02, "status": "ok"}, perf, Thresholds(), "max", 10)
    assert drift_metrics(rep) == {"drift.psi.transparency": 0.3, "drift.psi.promises": 0.01, "drift.psi.risk": 0.02,
                                  "drift.churn rate.realised": 0.05, "drift.roc_auc.realised": 0.66}
