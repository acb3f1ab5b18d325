import gc
import weakref

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustml.treeshap import TreeShapTables, tables_for, tree_shap

TOL = 1e-9


def _data(seed: int, n: int, p: int, n_cat: int, nan_share: float, zero_share: float):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).round(int(rng.integers(0, 3)))  # rounding: ties on thresholds
    for c in range(n_cat):
        X[:, c] = rng.integers(0, int(rng.integers(2, 12)), n)
    X[rng.random(X.shape) < nan_share] = np.nan
    X[rng.random(X.shape) < zero_share] = 0.0
    y = (np.nan_to_num(X) @ rng.normal(size=p) + rng.normal(size=n) > 0).astype(int)
    return X, y


def _queries(seed: int, X: np.ndarray, n_cat: int) -> np.ndarray:
    """Rows LightGBM never saw: NaN, +-0, tiny, inf, categories unseen, negative or fractional, beside training rows."""
    rng = np.random.default_rng(seed + 1)
    Q = rng.normal(size=(200, X.shape[1])).round(1)
    for c in range(n_cat):
        Q[:, c] = rng.integers(-2, 14, len(Q)) + rng.choice([0.0, 0.5, -0.5], len(Q))
    Q[rng.random(Q.shape) < 0.2] = np.nan
    Q[rng.random(Q.shape) < 0.1] = 0.0
    Q[rng.random(Q.shape) < 0.05] = -0.0
    Q[rng.random(Q.shape) < 0.02] = np.inf
    Q[rng.random(Q.shape) < 0.02] = rng.choice([1e-36, -1e-36, 2e-35, -2e-35])  # around LightGBM's zero threshold
    return np.vstack([Q, X[:100]])


def _assert_exact(tables: TreeShapTables, booster, Q: np.ndarray, **predict):
    ref = booster.predict(Q, pred_contrib=True, **predict)
    values = tables.shap_values(Q)
    assert values.shape == (len(Q), booster.num_feature()) and values.dtype == np.float64
    assert np.abs(values - ref[:, :-1]).max() < TOL
    assert abs(tables.expected_value - ref[0, -1]) < TOL
    # the few-rows path (what-if) gives the same values
    few = np.vstack([tables.shap_values(Q[i:i + 2]) for i in range(0, 40, 2)])
    assert np.abs(few - ref[:40, :-1]).max() < TOL


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), num_leaves=st.integers(2, 64), p=st.integers(1, 6), cat=st.integers(0, 2),
       nan_share=st.sampled_from([0.0, 0.1, 0.3]), zero_share=st.sampled_from([0.0, 0.2]),
       zero_as_missing=st.booleans(), use_missing=st.booleans(), monotone=st.booleans(),
       n_trees=st.integers(1, 25), num_iteration=st.one_of(st.none(), st.integers(1, 30)),
       max_patterns=st.sampled_from([8, 64, 4096]), max_group_features=st.integers(1, 5))
def test_equals_lightgbm_pred_contrib(seed, num_leaves, p, cat, nan_share, zero_share, zero_as_missing, use_missing,
                                      monotone, n_trees, num_iteration, max_patterns, max_group_features):
    n_cat = min(cat, p)
    X, y = _data(seed, 400, p, n_cat, nan_share, zero_share)
    params = dict(objective="binary", num_leaves=num_leaves, min_data_in_leaf=5, min_data_per_group=1, cat_smooth=1,
                  max_cat_to_onehot=1 + seed % 6, zero_as_missing=zero_as_missing, use_missing=use_missing,
                  verbosity=-1, num_threads=1, seed=seed, deterministic=True)
    if monotone:
        params["monotone_constraints"] = [0 if j < n_cat else (-1, 1)[(seed >> j) & 1] for j in range(p)]
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=list(range(n_cat))), n_trees)
    tables = TreeShapTables(booster, num_iteration=num_iteration, max_patterns=max_patterns,
                            max_group_features=max_group_features)
    assert tables.n_table_trees + tables.n_fallback_trees <= tables.n_trees
    _assert_exact(tables, booster, _queries(seed, X, n_cat), num_iteration=num_iteration)


def _model(num_leaves=16, n_trees=20, seed=0, **params):
    X, y = _data(seed, 600, 5, 1, 0.1, 0.1)
    booster = lgb.train(dict(objective="binary", num_leaves=num_leaves, min_data_in_leaf=3, min_data_per_group=1,
                             verbosity=-1, num_threads=1, seed=seed, **params),
                        lgb.Dataset(X, y, categorical_feature=[0]), n_trees)
    return booster, _queries(seed, X, 1)


def test_fallback_to_pred_contrib_for_large_trees_is_exact():
    booster, Q = _model(num_leaves=48)  # 47 splits: too many patterns for the default table size
    assert TreeShapTables(booster).n_fallback_trees > 0
    everything = TreeShapTables(booster, max_patterns=1)  # no tree fits a table
    assert everything.n_fallback_trees == everything.n_trees > 0 and everything.n_table_trees == 0
    _assert_exact(everything, booster, Q)
    small, Q = _model(num_leaves=8)
    mixed = TreeShapTables(small, max_patterns=64)  # some trees in tables, the others by pred_contrib
    assert mixed.n_fallback_trees > 0 and mixed.n_table_trees > 0
    _assert_exact(mixed, small, Q)
    one_call = TreeShapTables(small, max_patterns=64, max_fallback_calls=0)  # all trees in one pred_contrib call
    assert one_call.n_table_trees == 0 and one_call.n_fallback_trees == one_call.n_trees
    _assert_exact(one_call, small, Q)
    deep = TreeShapTables(booster, max_path_features=2)  # leaves testing 3+ features: too deep
    assert deep.n_fallback_trees > 0
    _assert_exact(deep, booster, Q)


def test_iterations_like_predict_best_iteration_and_start():
    X, y = _data(3, 800, 4, 0, 0.1, 0.0)
    booster = lgb.train(dict(objective="binary", num_leaves=6, verbosity=-1, num_threads=1, learning_rate=0.3),
                        lgb.Dataset(X[:600], y[:600]), 200, valid_sets=[lgb.Dataset(X[600:], y[600:])],
                        callbacks=[lgb.early_stopping(5, verbose=False)], keep_training_booster=True)
    assert 0 < booster.best_iteration < booster.current_iteration()
    Q = _queries(3, X, 0)
    default = TreeShapTables(booster)  # like predict: the best iteration
    assert default.num_iteration == booster.best_iteration
    _assert_exact(default, booster, Q)
    _assert_exact(TreeShapTables(booster, num_iteration=-1), booster, Q, num_iteration=-1)
    _assert_exact(TreeShapTables(booster, start_iteration=3, num_iteration=4), booster, Q, start_iteration=3, num_iteration=4)


def test_single_leaf_trees_and_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = 2 * X[:, 0] + rng.normal(size=300)
    booster = lgb.train(dict(objective="regression", num_leaves=8, verbosity=-1, num_threads=1), lgb.Dataset(X, y), 10)
    _assert_exact(TreeShapTables(booster), booster, X)
    # a constant target: every tree is one leaf, the whole prediction is the base value
    stump = lgb.train(dict(objective="regression", verbosity=-1, num_threads=1), lgb.Dataset(X, np.ones(300)), 3)
    tables = TreeShapTables(stump)
    assert tables.n_table_trees == tables.n_fallback_trees == 0
    _assert_exact(tables, stump, X)


def test_tables_are_cached_per_booster_and_dropped_with_it():
    booster, Q = _model(n_trees=5)
    assert tables_for(booster) is tables_for(booster)
    assert tables_for(booster, num_iteration=2) is not tables_for(booster)
    values, base = tree_shap(booster, Q[:3])
    assert np.allclose(values.sum(axis=1) + base, booster.predict(Q[:3], raw_score=True), atol=TOL)
    ref = weakref.ref(tables_for(booster))
    del booster
    gc.collect()
    assert ref() is None


def test_rejects_what_it_cannot_explain():
    X, _ = _data(0, 300, 3, 0, 0.0, 0.0)
    y = np.arange(300) % 3
    multi = lgb.train(dict(objective="multiclass", num_class=3, verbosity=-1, num_threads=1), lgb.Dataset(X, y), 2)
    with pytest.raises(ValueError, match="one tree per iteration"):
        TreeShapTables(multi)
    booster, _ = _model(n_trees=2)
    with pytest.raises(ValueError, match="columns"):
        TreeShapTables(booster).shap_values(np.zeros((2, 3)))
    assert TreeShapTables(booster).shap_values(np.zeros((0, 5))).shape == (0, 5)


def test_explain_uses_the_tables_and_matches_pred_contrib(model, table):
    from trustml.explanations import explain
    rows = table.labelled().head(300)
    ex = explain(model, rows)
    X = model.model.transform_matrix(rows.select(model.registry.names))
    ref = model.model.booster_.predict(X, pred_contrib=True, num_iteration=model.model.n_iter_)
    lin, lin_base = model.model.linear_contributions(X) if hasattr(model.model, "linear_contributions") else (0.0, 0.0)
    assert np.abs(ex.values - (ref[:, :-1] + lin)).max() < TOL
    assert np.abs(ex.base_values - (ref[:, -1] + lin_base)).max() < TOL
    one = explain(model, rows.head(1))  # the what-if path: one row
    assert np.abs(one.values - ex.values[:1]).max() < TOL
    assert tables_for(model.model.booster_, num_iteration=model.model.n_iter_).n_trees == model.model.n_iter_


def test_values_within_zero_threshold_are_read_as_zero_like_lightgbm():
    # a split at 5e-36 (inside LightGBM's +-1e-35 "zero"): its predictor reads 8e-36 as 0.0, so left
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    booster = lgb.train(dict(objective="binary", num_leaves=3, verbosity=-1, num_threads=1), lgb.Dataset(X, (X[:, 0] > 0).astype(int)), 2)
    lines = [("threshold=" + " ".join(["5e-36"] * len(line.split("=")[1].split()))) if line.startswith("threshold=") else line
             for line in booster.model_to_string().split("\n") if not line.startswith("tree_sizes=")]
    edited = lgb.Booster(model_str="\n".join(lines))
    Q = np.array([[8e-36, 1.0], [-8e-36, -1.0], [2e-35, 8e-36], [-2e-35, 2e-35], [np.nan, 0.0]] * 3)
    ref = edited.predict(Q, pred_contrib=True)
    assert len(np.unique(ref[:, :-1].round(12), axis=0)) > 1  # the split matters for these rows
    _assert_exact(TreeShapTables(edited), edited, Q)
