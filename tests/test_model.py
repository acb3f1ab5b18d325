import json

import numpy as np
import polars as pl
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from trustml.model import ChurnModel, ModelMismatchError, TrainedModel, temporal_split, train

# Each excluded scikit-learn check, with why: none are excluded today. If one must be, list it here.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([ChurnModel(n_estimators=20, min_child_samples=2)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def test_deterministic(table):
    a, _ = train(table)
    b, _ = train(table)
    te = table.labelled().tail(500)
    assert np.array_equal(a.predict_risk(te), b.predict_risk(te))


def test_temporal_split_never_mixes_time(table):
    split = temporal_split(table)
    assert max(split.train) < min(split.calibrate) < max(split.calibrate) < min(split.test)


def test_beats_baselines_and_is_calibrated(table, trained):
    from trustml.evaluate import calibration_table, compare_models
    model, split = trained
    comp = compare_models(table, split, model)
    auc = dict(zip(comp["model"], comp["roc_auc"], strict=True))
    assert auc["lightgbm (calibrated)"] > auc["rule: tickets + short tenure"] + 0.05
    te = split.frames(table.labelled())[2]
    cal = calibration_table(te["churned"], model.predict_risk(te), bins=5)
    assert (cal["mean_predicted"] - cal["observed_rate"]).abs().max() < 0.05


def test_monotone_constraints_come_from_the_registry(table):
    model, _ = train(table, monotone=True, n_estimators=80)
    assert model.model.monotone_constraints == table.registry.monotone_constraints()
    # raising a feature with direction +1 never lowers the predicted risk
    name = "promise_broken__count_90d"
    te = table.labelled().tail(300)
    up = te.with_columns(pl.col(name) + 2)
    assert (model.predict_risk(up, calibrated=False) >= model.predict_risk(te, calibrated=False) - 1e-12).all()


def test_save_load_without_pickle(tmp_path, table, trained):
    model, _ = trained
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.txt"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["versions"]["lightgbm"] and meta["trained_on"]["fingerprint"]
    back = TrainedModel.load(tmp_path / "m")
    te = table.labelled().tail(400)
    assert np.allclose(back.predict_risk(te), model.predict_risk(te))
    assert back.registry.names == model.registry.names


def test_other_features_give_a_clear_error(table, trained):
    model, _ = trained
    te = table.labelled().tail(10)
    with pytest.raises(ModelMismatchError, match="promise_broken__count_90d"):
        model.predict_risk(te.drop("promise_broken__count_90d"))
    with pytest.raises(ModelMismatchError, match="different order"):
        model.model.predict_proba(te.select(list(reversed(model.registry.names))))


def test_one_class_target_is_refused():
    with pytest.raises(ValueError, match="one class"):
        ChurnModel().fit(np.zeros((20, 2)), np.zeros(20))


def test_backtest_has_several_time_ordered_folds(table):
    from trustml.evaluate import backtest
    bt = backtest(table, folds=2, test_snapshots=2, n_estimators=60)
    assert bt.height == 2
    assert (bt["train_until"] < bt["test_from"]).all()
    assert bt["test_from"][0] < bt["test_from"][1]


def test_backtest_keeps_the_folds_that_fit_a_short_history(table):
    import polars as pl

    from trustml.evaluate import backtest
    from trustml.features import FeatureTable
    dates = sorted(table.labelled()["snapshot_date"].unique())[:9]
    short = FeatureTable(table.frame.filter(pl.col("snapshot_date").is_in(dates)), table.registry, table.snapshots,
                         table.as_of, table.dropped)
    bt = backtest(short, folds=3, test_snapshots=2, n_estimators=40)
    assert 1 <= bt.height < 3 and bt["fold"].to_list() == list(range(1, bt.height + 1))
    tiny = FeatureTable(table.frame.filter(pl.col("snapshot_date").is_in(dates[:4])), table.registry, table.snapshots,
                        table.as_of, table.dropped)
    with pytest.raises(ValueError, match="not even one fold"):
        backtest(tiny)
