import numpy as np
import polars as pl
import pytest
import shap

from trustml.explanations import cohort_pillars, explain, pillar_explanation, pillar_importance, reason_codes, top_interactions, truthfulness


@pytest.fixture(scope="module")
def test_rows(table, trained):
    return trained[1].frames(table.labelled())[2]


@pytest.fixture(scope="module")
def expl(trained, test_rows):
    return explain(trained[0], test_rows)


def test_explanation_is_exact_and_a_shap_object(trained, test_rows, expl):
    assert isinstance(expl, shap.Explanation)
    raw = trained[0].log_odds(test_rows)
    assert np.abs(expl.base_values + expl.values.sum(axis=1) - raw).max() < 1e-6


def test_pillars_are_exactly_additive(trained, test_rows, expl):
    pe = pillar_explanation(expl, trained[0].registry)
    assert np.allclose(pe.values.sum(axis=1), expl.values.sum(axis=1))
    assert np.abs(pe.base_values + pe.values.sum(axis=1) - trained[0].log_odds(test_rows)).max() < 1e-6
    assert len(pe.feature_names) == len(trained[0].registry.pillars)


def test_global_ranking_and_cohorts(trained, test_rows, expl):
    imp = pillar_importance(expl, trained[0].registry)
    assert imp["share"].sum() == pytest.approx(1.0)
    assert imp["mean_abs_shap"].is_sorted(descending=True)
    coh = cohort_pillars(expl, trained[0].registry, test_rows["churned"])
    assert coh["cohort"].to_list() == [0, 1]
    # churners carry more positive (risk-raising) pillar contributions than stayers
    pillars = trained[0].registry.pillars
    assert coh.filter(pl.col("cohort") == 1).select(pillars).sum_horizontal()[0] > coh.filter(pl.col("cohort") == 0).select(pillars).sum_horizontal()[0]


def test_reason_codes_are_plain_pseudonymised_and_on_the_probability_scale(trained, test_rows, expl):
    rows = test_rows.head(20)
    rc = reason_codes(trained[0], rows, expl[:20])
    assert rc.height > 0
    assert not set(rc["customer"]) & set(rows["customer_id"])  # no raw ids
    assert rc["customer"].str.starts_with("cust-").all()
    assert rc["reason"].str.contains("points of churn risk").all()
    # a reason's points = risk(all) - risk(all without it), through the calibrator like every risk shown
    first = rc.row(0, named=True)
    i = rows["customer_id"].to_list().index(next(c for c in rows["customer_id"]
                                               if __import__("trustml").pseudonymise([c])[0] == first["customer"]))
    j = trained[0].registry.names.index(first["feature"])
    full = expl.base_values[i] + expl.values[i].sum()
    risk = trained[0].risk_from_log_odds
    assert first["points"] == pytest.approx(100 * (risk([full])[0] - risk([full - expl.values[i, j]])[0]), abs=0.01)


def test_reason_codes_show_the_same_risk_as_predict_risk(trained, test_rows, expl):
    rows = test_rows.head(30)
    rc = reason_codes(trained[0], rows, expl[:30]).group_by("customer", maintain_order=True).agg(pl.col("risk_pct").first())
    want = dict(zip(__import__("trustml").pseudonymise(rows["customer_id"].to_list()),
                    (100 * trained[0].predict_risk(rows)).round(1), strict=True))
    assert all(r["risk_pct"] == want[r["customer"]] for r in rc.iter_rows(named=True))


def test_interactions_rank_pairs(trained, test_rows):
    top = top_interactions(trained[0], test_rows, sample=100, top=5)
    assert top.height == 5 and top["strength"].is_sorted(descending=True)


def test_truthfulness_against_the_simulator(world, trained, test_rows, expl):
    r = truthfulness(trained[0], test_rows, world.truth, n_customers=3000, n_months=18, seed=7, expl=expl, top_at_risk=50)
    assert -1 <= r["spearman"] <= 1 and 0 <= r["agreement"] <= 1
    assert r["spearman"] > 0.5  # measured on the default world in benchmarks/explain_truth.py; small data is noisier
    assert r["levers"].height == 50
    assert r["disagreements"].height == int(round((1 - r["agreement"]) * 50))
    assert r["disagreements"]["reason"].null_count() == 0


def test_dependence_feature_prefers_contact_then_actionable_then_strongest(trained, table):
    import dataclasses

    from trustml.explanations import dependence_feature, explain, feature_importance
    from trustml.features import FeatureRegistry
    model = trained[0]
    expl = explain(model, table.labelled().head(300))
    assert dependence_feature(expl, model.registry) == "marketing_contact__count_30d"
    keep = [i for i, n in enumerate(model.registry.names) if n != "marketing_contact__count_30d"]
    sub = expl[:, keep]
    feats = [model.registry.features[i] for i in keep]
    actionable = FeatureRegistry(tuple(feats))
    ranked = feature_importance(sub, actionable)["feature"].to_list()
    assert dependence_feature(sub, actionable) == next(f for f in ranked if actionable[f].actionable)
    none = FeatureRegistry(tuple(dataclasses.replace(f, actionable=False) for f in feats))
    assert dependence_feature(sub, none) == ranked[0]


def test_a_capped_days_since_reads_as_absence_not_as_a_fact():
    from trustml.explanations import _phrase
    from trustml.features import Feature
    f = Feature("usage__days_since_90d", "engagement", "Days since the last session (capped at 90).", "days", False, None, 1, False)
    assert _phrase(f, 90.0, 400.0) == "no 'usage' in the last 90 days"
    assert _phrase(f, 2.0, 2.0) == "no 'usage' since signup (2 days ago)"
    assert _phrase(f, 12.0, 400.0).endswith(": 12 days")


# -- dependence plots of categoricals, and declared directions against what the model learned -----

def _flat_study_parts(direction: int, n: int = 1500, seed: int = 0):
    """A flat table where churn falls with tenure and depends on the state; `direction` is what the mapping declares."""
    from trustml.mapping import Mapping, flat_table
    from trustml.model import train
    r = np.random.default_rng(seed)
    tenure = r.integers(0, 72, n)
    states = np.array([f"S{k:02d}" for k in range(51)])
    state = states[r.integers(0, 51, n)]
    p = 1 / (1 + np.exp(-(1.0 - 0.06 * tenure + 1.2 * np.isin(state, states[:10]))))
    df = pl.DataFrame({"id": [str(i) for i in range(n)], "tenure": tenure, "state": state, "noise": r.normal(size=n),
                       "left": (r.random(n) < p).astype(int)})
    m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": [1], "negative": [0]},
                           "source": {"max_categories": 60}, "directions": {"tenure": direction, "noise": 1}})
    table = flat_table(df, m)
    trained, split = train(table, trials=0)
    test = split.frames(table.labelled())[2]
    return trained, test, explain(trained, test)


@pytest.fixture(scope="module")
def wrong_sign():
    return _flat_study_parts(+1)


def test_a_categorical_dependence_plot_shows_labels_not_codes(wrong_sign):
    import matplotlib
    matplotlib.use("Agg")
    from trustml.explanations import plot_dependence
    trained, test, expl = wrong_sign
    ax = plot_dependence(expl, "state", trained, max_categories=60)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(ticks) == sorted(set(test["state"].to_list()))   # every label seen, as written; no code
    # riskiest label first: the ten risky states lead the order
    assert len(set(ticks[:10]) & {f"S{k:02d}" for k in range(10)}) >= 8
    few = plot_dependence(expl, "state", trained, max_categories=5)
    assert len(few.get_xticklabels()) == 5 and "rarer categories not shown" in few.get_title()
    num = plot_dependence(expl, "tenure", trained)
    assert num.get_xlabel().startswith("tenure") and len(num.collections[0].get_offsets()) == test.height


def test_a_declared_direction_the_model_contradicts_is_flagged(wrong_sign):
    from trustml.explanations import direction_check
    trained, test, expl = wrong_sign
    check = direction_check(expl, trained.registry, test["churned"])
    row = check.table.filter(pl.col("feature") == "tenure").row(0, named=True)
    assert (row["declared"], row["learned"], row["verdict"]) == (1, -1, "contradicts") and row["strength"] < -0.3
    assert len(check.warnings) == 1 and check.warnings[0].startswith("tenure: declared +1") and "opposite" in check.warnings[0]
    # the trees fit a shape to pure noise too (a strong rank correlation with its SHAP value), but it does not hold out
    noise = check.table.filter(pl.col("feature") == "noise").row(0, named=True)
    assert noise["verdict"] in ("not confirmed", "unclear", "unused"), noise
    assert "state" not in check.table["feature"].to_list()   # a category has no direction


def test_a_declared_direction_the_model_agrees_with_is_not_flagged():
    from trustml.explanations import direction_check
    trained, test, expl = _flat_study_parts(-1)
    check = direction_check(expl, trained.registry, test["churned"])
    assert check.table.filter(pl.col("feature") == "tenure")["verdict"][0] == "agrees" and check.warnings == []
    # a monotone-constrained model cannot contradict: the data's own association is read instead
    data = direction_check(expl, trained.registry, test["churned"], constrained=True)
    assert data.table.filter(pl.col("feature") == "tenure").row(0, named=True)["measured_on"] == "data (churn label)"
    assert data.table.filter(pl.col("feature") == "tenure")["verdict"][0] == "agrees"
    wrong = direction_check(expl, trained.registry.__class__(tuple(
        __import__("dataclasses").replace(f, direction=1) if f.name == "tenure" else f for f in trained.registry)),
        test["churned"], constrained=True)
    assert wrong.table.filter(pl.col("feature") == "tenure")["verdict"][0] == "contradicts" and "in the data" in wrong.warnings[0]
    with pytest.raises(ValueError, match="labels"):
        direction_check(expl, trained.registry, test["churned"].head(5))
