import datetime as dt

import numpy as np
import polars as pl
import pytest

from trustml.campaigns import analyse, assign, campaign_rows, crm_export, fit_uplift, qini, sample_size, target, with_traits
from trustml.features import Snapshots, build_features
from trustml.simulator import Campaign, Policy, campaign_effects, simulate


def test_sample_size_matches_the_textbook_and_grows_for_smaller_effects():
    n = sample_size(0.5, 0.1)          # 50% vs 60%, 80% power, 5% two-sided: 387 per arm (Fleiss, pooled variance)
    assert 380 <= n["per_arm"] <= 395 and n["total"] == n["treated"] + n["control"]
    assert sample_size(0.05, -0.01)["per_arm"] > sample_size(0.05, -0.02)["per_arm"]
    unequal = sample_size(0.05, -0.01, treated_share=0.8)
    assert unequal["treated"] > unequal["control"]
    with pytest.raises(ValueError):
        sample_size(0.01, -0.02)


def test_assignment_is_seeded_order_free_and_has_the_asked_share():
    ids = [f"C{i:07d}" for i in range(20_000)]
    a = assign(ids, 0.3, seed=4)
    assert abs(a.mean() - 0.3) < 0.015
    assert (assign(ids[::-1], 0.3, seed=4)[::-1] == a).all()          # order does not matter
    assert (assign(ids[:100], 0.3, seed=4) == a[:100]).all()           # nor who else is in the list
    assert (assign(ids, 0.3, seed=5) != a).any()


def test_crm_export_hides_ids_unless_asked():
    ids = ["C0000001", "C0000002", "C0000003", "C0000004"]
    out = crm_export(ids, 0.5, 1, "discount")
    assert not set(out["customer"]) & set(ids)
    assert set(out["arm"]) <= {"treatment", "control"}
    assert (out.filter(pl.col("arm") == "control")["offer"] == "none").all()
    assert crm_export(ids, 0.5, 1, "discount", real_ids=True)["customer"].to_list() == ids


def test_analyse_recovers_a_known_difference_and_refuses_one_arm():
    rng = np.random.default_rng(0)
    t = rng.random(20_000) < 0.5
    y = (rng.random(20_000) < np.where(t, 0.08, 0.10)).astype(int)
    r = analyse(pl.DataFrame({"churned": y, "treated": t}))
    assert r["ci"][0] < -0.02 < r["ci"][1] and r["ci"][1] < 0
    with pytest.raises(ValueError, match="both arms"):
        analyse(pl.DataFrame({"churned": y, "treated": np.ones(20_000, bool)}))


def test_qini_rewards_ranking_by_the_true_effect():
    rng = np.random.default_rng(1)
    n = 40_000
    effect = np.where(rng.random(n) < 0.5, -0.15, 0.05)               # persuadables and sleeping dogs
    t = rng.random(n) < 0.5
    y = (rng.random(n) < 0.2 + t * effect).astype(int)
    good, rand = qini(-effect, y, t), qini(rng.random(n), y, t)
    assert good["coefficient"] > 0.02 and abs(rand["coefficient"]) < 0.01
    assert good["uplift_at"]["top_10pct"] > 0.1
    assert target([0.1, 0.01], [100, 100], [5, 5]).tolist() == [True, False]


def test_campaign_analysis_on_the_simulator_covers_the_true_effect():
    c = Campaign("discount", month=10, share=0.5, seed=2)
    w = simulate(4000, 15, seed=2, policy=Policy(campaign=c))
    table = build_features(w.customers, w.events, Snapshots(), as_of=w.as_of)
    rows = campaign_rows(table, w.customers, w.events, start=dt.date(2024, 11, 1), share=c.share, seed=c.seed)
    truth = campaign_effects(4000, 15, 2, c)
    true_ate = rows.join(truth, on="customer_id", how="left")["effect"].fill_null(0.0).mean()
    r = analyse(rows)
    assert r["ci"][0] <= true_ate <= r["ci"][1] and true_ate < 0
    up = fit_uplift(rows, table.registry.names, seed=0)
    assert up.predict(rows.head(20)).shape == (20,)


@pytest.mark.parametrize("learner", ["x", "dr"])
def test_uplift_learners_find_persuadables_and_sleeping_dogs(learner):
    rng = np.random.default_rng(3)
    n = 12_000
    x = rng.normal(size=(n, 3))
    effect = np.where(x[:, 0] > 0, -0.15, 0.08)                     # persuadables vs sleeping dogs, on x0 only
    t = rng.random(n) < 0.5
    y = (rng.random(n) < 0.25 + 0.05 * x[:, 1] + t * effect).astype(int)
    rows = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "churned": y, "treated": t})
    up = fit_uplift(rows, ["a", "b", "c"], seed=0, learner=learner)
    pred = up.predict(rows)
    assert pred[effect < 0].mean() < 0 < pred[effect > 0].mean()
    assert qini(-pred, y, t)["coefficient"] > 0.5 * qini(-effect, y, t)["coefficient"] > 0
    with pytest.raises(ValueError, match="learner"):
        fit_uplift(rows, ["a"], learner="s")


def test_with_traits_adds_each_levers_revealed_traits(table, world):
    rows = table.latest().head(200)
    out, names = with_traits(rows, world.events)
    assert out.height == 200 and names and all("__revealed_" in n for n in names)
    assert "respect_for_time__revealed_welcome_rank2" in names and "service_quality__revealed_volume" in names
