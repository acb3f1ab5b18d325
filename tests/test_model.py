import json

import numpy as np
import polars as pl
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from trustml.model import ChurnModel, ModelMismatchError, TrainedModel, linear_score, temporal_split, train

# Each excluded scikit-learn check, with why: none are excluded today. If one must be, list it here.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([ChurnModel(n_estimators=20, min_child_samples=2)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def test_deterministic_including_the_search(table):
    a, _ = train(table, trials=4)
    b, _ = train(table, trials=4)
    te = table.labelled().tail(500)
    assert np.array_equal(a.predict_risk(te), b.predict_risk(te))
    assert a.metadata["tuning"] == b.metadata["tuning"]


def test_tuning_tries_lightgbm_defaults_and_records_the_search(table):
    trained, _ = train(table, trials=5)
    tuning = trained.metadata["tuning"]
    trials = tuning["trials"]
    assert [t["source"] for t in trials][:3] == ["trustml small trees", "LightGBM defaults", "small trees on a linear base"]
    assert len(trials) == 5 and set(tuning["search_space"]) >= {"num_leaves", "learning_rate", "linear_base"}
    best = max(t["validation_roc_auc"] for t in trials)
    assert tuning["validation_roc_auc"] == pytest.approx(best, abs=1e-5)
    chosen = {k: v for k, v in trained.model.get_params().items() if k in tuning["chosen"]}
    assert chosen == tuning["chosen"]  # the model is the one the search chose
    assert "rolling origin" in tuning["validation"]


def test_a_linear_base_extrapolates_where_trees_cannot():
    """Later rows lie beyond the training range (e.g. tenure grows with time): trees flatten, a linear base does not."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 4000)
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-(x - 10) / 2))).astype(int)
    X = pl.DataFrame({"x": x, "noise": rng.normal(size=4000)})
    later = pl.DataFrame({"x": np.linspace(10, 20, 200), "noise": np.zeros(200)})
    trees = ChurnModel(n_estimators=200, early_stopping=False).fit(X, y)
    hybrid = ChurnModel(n_estimators=200, early_stopping=False, linear_base=True).fit(X, y)
    assert np.ptp(trees.decision_function(later)) < 0.2 < np.ptp(hybrid.decision_function(later))
    on_train, _ = hybrid.linear_contributions(hybrid.transform_matrix(X))
    assert np.abs(on_train.mean(axis=0)).max() < 1e-9  # SHAP values of the linear part average to 0 on training data
    values, base = hybrid.linear_contributions(hybrid.transform_matrix(later))
    lin = base + values.sum(axis=1)
    raw = hybrid.booster_.predict(hybrid.transform_matrix(later), raw_score=True)
    assert np.allclose(lin + raw, hybrid.decision_function(later))


def test_a_categorical_reaches_the_linear_base_one_indicator_per_level(tmp_path):
    """A plan that carries the churn signal moves the linear base; its SHAP value is the sum over its levels."""
    rng = np.random.default_rng(2)
    plan = rng.choice(["basic", "plus", "premium"], 3000)
    x = rng.normal(size=3000)
    z = np.select([plan == "basic", plan == "plus"], [1.0, 0.0], -1.5) + 0.5 * x
    y = (rng.uniform(size=3000) < 1 / (1 + np.exp(-z))).astype(int)
    X = pl.DataFrame({"plan": plan, "x": x})
    model = ChurnModel(n_estimators=1, early_stopping=False, linear_base=True).fit(X, y)
    assert model.linear_["onehot"] == [[0, 3]]
    Xm = model.transform_matrix(X)
    values, base = model.linear_contributions(Xm)
    assert np.allclose(base + values.sum(axis=1), model._linear_score(Xm))
    by_plan = pl.DataFrame({"plan": plan, "v": values[:, 0]}).group_by("plan").agg(pl.col("v").mean())
    v = dict(by_plan.iter_rows())
    assert v["basic"] > v["plus"] > v["premium"]     # the level's own effect, learned from the indicators
    unseen = pl.DataFrame({"plan": ["gold"], "x": [0.0]})   # a level not seen in training: no indicator
    assert np.isfinite(model.decision_function(unseen)).all()
    old = {k: v for k, v in model.linear_.items() if k != "onehot"}   # a model saved before categoricals entered
    old.update(mean=old["mean"][:1], coef=old["coef"][:1])
    assert np.isfinite(linear_score(old, Xm)).all()


@pytest.mark.parametrize("churners, method", [(27, "sigmoid"), (1500, "isotonic")])
def test_calibration_keeps_the_ranking_and_never_reaches_0_or_1(churners, method):
    from trustml.model import Calibrator
    rng = np.random.default_rng(0)
    n = 12 * churners
    p = rng.beta(1, 6, n)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, churners, replace=False, p=p / p.sum())] = 1
    cal = Calibrator("auto").fit(p, y)
    assert cal.method_ == method and f"{churners:,} churners" in cal.reason_
    grid = np.sort(np.unique(np.concatenate([p, [0.0, 1e-9, 0.999999, 1.0]])))
    out = cal.predict(grid)
    assert np.all(np.diff(out) > 0), "distinct scores must stay distinct and in order"
    assert out.min() > 0 and out.max() < 1
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.array_equal(back.predict(grid), out)


def test_temporal_split_never_mixes_time(table):
    split = temporal_split(table)
    assert max(split.train) < min(split.calibrate) < max(split.calibrate) < min(split.test)


def test_beats_baselines_and_is_calibrated(table, trained):
    from trustml.evaluate import calibration_table, compare_models
    model, split = trained
    comp = compare_models(table, split, model)
    auc = dict(zip(comp["model"], comp["roc_auc"], strict=True))
    assert auc["lightgbm (calibrated)"] > auc["rule: tickets + short tenure"] + 0.05
    assert {"rule: short tenure", "logistic regression"} <= set(auc) and any(m.startswith("recency/frequency") for m in auc)
    row = comp.row(0, named=True)
    assert row["roc_auc_lo"] < row["roc_auc"] < row["roc_auc_hi"]
    assert set(comp["vs_model"][1:]) <= {"cannot tell apart", "better than the model", "worse than the model"}
    te = split.frames(table.labelled())[2]
    cal = calibration_table(te["churned"], model.predict_risk(te), bins=5)
    assert (cal["mean_predicted"] - cal["observed_rate"]).abs().max() < 0.05


def test_monotone_constraints_come_from_the_registry(table):
    model, _ = train(table, monotone=True, trials=0, n_estimators=80)
    assert model.model.monotone_constraints == table.registry.monotone_constraints()
    # raising a feature with direction +1 never lowers the predicted risk
    name = "promise_broken__count_90d"
    te = table.labelled().tail(300)
    up = te.with_columns(pl.col(name) + 2)
    assert (model.predict_risk(up, calibrated=False) >= model.predict_risk(te, calibrated=False) - 1e-12).all()


def test_calibration_is_reported_before_and_after(table, trained):
    from trustml.evaluate import calibration_report
    model, split = trained
    te = split.frames(table.labelled())[2]
    rep = calibration_report(te["churned"], model.predict_risk(te, calibrated=False), model.predict_risk(te))
    assert rep["scores"].to_list() == ["before (raw model)", "after (calibrated)"]
    assert rep["roc_auc"][0] == rep["roc_auc"][1]  # calibration never changes the ranking
    assert rep["distinct_scores"][0] == rep["distinct_scores"][1]


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


def _saved(tmp_path, trained, name="m"):
    import shutil
    src = tmp_path / "orig"
    if not src.exists():
        trained[0].save(src)
    shutil.copytree(src, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("tamper, where", [
    (lambda d: (d / "model.txt").write_text((d / "model.txt").read_text()[:5000]), "model.txt"),     # truncated
    (lambda d: (d / "model.txt").write_bytes(b"\x00garbage\xff" * 50), "model.txt"),                # garbage
    (lambda d: (d / "model.txt").write_text((d / "model.txt").read_text().replace("leaf_value=", "leaf_value=1", 1)), "model.txt"),
    (lambda d: _edit_json(d, lambda m: m["calibrator"].update(platt=[0.0, 4.6])), "model.json"),     # calibrator forced
    (lambda d: _edit_json(d, lambda m: m["feature_names"].reverse()), "model.json"),                  # features swapped
    (lambda d: _edit_json(d, lambda m: m["categories"].update(plan=["x", "y", "z"])), "model.json"),  # categories altered
    (lambda d: (d / "model.json").write_text("{not json"), "model.json"),
    (lambda d: (d / "model.json").unlink(), "model.json missing"),
])
def test_a_tampered_model_folder_is_refused_with_one_clear_message(tmp_path, trained, tamper, where):
    from trustml.contract import ContractError
    d = _saved(tmp_path, trained)
    tamper(d)
    with pytest.raises(ContractError, match=where.replace(".", r"\.")):
        TrainedModel.load(d)


def test_model_files_from_two_models_are_refused(tmp_path, table, trained):
    from trustml.contract import ContractError
    d = _saved(tmp_path, trained)
    other, _ = train(table, trials=0, n_estimators=30, early_stopping=False)
    other.save(tmp_path / "other")
    (d / "model.txt").write_bytes((tmp_path / "other" / "model.txt").read_bytes())
    with pytest.raises(ContractError, match="does not match model.json"):
        TrainedModel.load(d)


def _edit_json(d, change):
    meta = json.loads((d / "model.json").read_text())
    change(meta)
    (d / "model.json").write_text(json.dumps(meta))


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
    bt = backtest(table, folds=2, test_snapshots=2, trials=0, n_estimators=60)
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
    bt = backtest(short, folds=3, test_snapshots=2, trials=0, n_estimators=40)
    assert 1 <= bt.height < 3 and bt["fold"].to_list() == list(range(1, bt.height + 1))
    tiny = FeatureTable(table.frame.filter(pl.col("snapshot_date").is_in(dates[:4])), table.registry, table.snapshots,
                        table.as_of, table.dropped)
    with pytest.raises(ValueError, match="not even one fold"):
        backtest(tiny)


def test_beyond_the_row_cap_the_fit_reads_whole_customers_and_says_so(table, monkeypatch):
    import trustml.model as tm_model
    monkeypatch.setattr(tm_model, "TRAIN_MAX_ROWS", 3000)
    trained, split = train(table, trials=0)
    sampled = trained.metadata["trained_on"]["sampled"]
    full = split.frames(table.labelled())[0]
    assert sampled["rows_before"] == full.height and sampled["rows"] <= 3000 * 1.2 < full.height
    assert sampled["customers"] < sampled["of_customers"] == full["customer_id"].n_unique()
    assert trained.metadata["trained_on"]["rows"] == sampled["rows"]
    # whole customers: the same draw again keeps every snapshot of each kept customer
    again, _ = train(table, trials=0)
    assert again.metadata["trained_on"] == trained.metadata["trained_on"]
