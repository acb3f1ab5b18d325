import numpy as np
import polars as pl
import pytest

from trustml.evaluate import baselines, bootstrap, gains_table, interval, metrics, top_decile_lift
from trustml.mapping import Mapping, flat_table


def test_top_decile_lift_is_one_tie_aware_definition_everywhere():
    """Ties at the cut-off once put 15% of rows in the 'top decile' of one table and 10% in another."""
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=2000) < 0.2).astype(int)
    p = np.round(rng.uniform(size=2000) * (1 + y), 1) / 2  # coarse scores: many ties at every cut-off
    lift = top_decile_lift(y, p)
    assert metrics(y, p)["top_decile_lift"] == pytest.approx(lift, abs=1e-3)
    assert gains_table(y, p)["lift"][0] == pytest.approx(lift)
    g = gains_table(y, p)
    assert g["customers"].sum() == 2000 and g["churners"].sum() == pytest.approx(y.sum())
    # with all scores tied, the top decile is an average decile: lift 1
    assert top_decile_lift(y, np.zeros(2000)) == pytest.approx(1.0)


def test_bootstrap_intervals_resample_customers_and_pair_the_models():
    rng = np.random.default_rng(1)
    customers = np.repeat(np.arange(400), 3)
    y = (rng.uniform(size=1200) < 0.3).astype(int)
    good = y + rng.normal(size=1200)
    draws = bootstrap(y, {"good": good, "same": good.copy(), "noise": rng.normal(size=1200)}, groups=customers, n_boot=200)
    lo, hi = interval(draws["good"])
    assert lo < metrics(y, good, probability=False)["roc_auc"] < hi
    assert np.array_equal(draws["good"], draws["same"])  # the same resamples for every model
    dlo, dhi = interval(draws["noise"] - draws["good"])
    assert dhi < 0


def test_baselines_fit_the_data():
    """A tickets rule only where tickets exist; a tenure rule where tenure exists; else neither."""
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    df = pl.DataFrame({"id": [str(i) for i in range(n)], "churn": np.where(y == 1, "Yes", "No"),
                       "tenure": rng.integers(1, 60, n), "spend": rng.normal(size=n)})
    m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "churn"}})
    lab = flat_table(df, m).labelled()
    names = sorted(baselines(lab, lab, flat_table(df, m).registry))
    assert names == ["logistic regression", "rule: short tenure"]
    no_tenure = flat_table(df.drop("tenure"), m)
    assert sorted(baselines(no_tenure.labelled(), no_tenure.labelled(), no_tenure.registry)) == ["logistic regression"]


@pytest.mark.parametrize("seed", range(5))
def test_the_bootstrap_auc_equals_scikit_learns_ties_included(seed):
    from sklearn.metrics import roc_auc_score

    from trustml.evaluate import roc_auc
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[:2] = [True, False]
    p = np.round(rng.random(n), int(rng.integers(1, 4)))   # few decimals: many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_the_bootstrap_shortcut_equals_the_auc_of_each_resample(seed):
    """The weighted-AUC shortcut of `bootstrap` gives, draw for draw, `roc_auc` of the resampled rows (ties, groups)."""
    from trustml.evaluate import roc_auc
    rng = np.random.default_rng(seed)
    n = 900
    y = (rng.random(n) < 0.2).astype(int)
    scores = {"a": np.round(rng.random(n) + 0.3 * y, 2), "b": rng.random(n)}
    groups = rng.integers(0, 300, n)
    fast = bootstrap(y, scores, groups=groups, n_boot=40, seed=seed)
    slow = bootstrap(y, scores, groups=groups, n_boot=40, seed=seed, metric=lambda a, b: roc_auc(a, b))
    for k in scores:
        assert len(fast[k]) == len(slow[k]) > 30
        assert np.allclose(fast[k], slow[k], rtol=0, atol=1e-12)
