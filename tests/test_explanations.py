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
