import datetime as dt

import numpy as np
import polars as pl
import pytest

from trustml import campaigns
from trustml.campaigns import analyse, assign, calibrate, campaign_rows, crm_export, fit_uplift, offer_cost, plan, qini, sample_size, target, with_traits
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


@pytest.mark.parametrize("learner", ["x", "dr", "scaled", "forest"])
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
    held = up.pseudo_outcomes(rows)
    assert abs(held.mean() - effect.mean()) < 0.03                     # doubly robust: unbiased on average
    with pytest.raises(ValueError, match="learner"):
        fit_uplift(rows, ["a"], learner="s")


def test_with_traits_adds_each_levers_revealed_traits(table, world):
    rows = table.latest().head(200)
    out, names = with_traits(rows, world.events)
    assert out.height == 200 and names and all("__revealed_" in n for n in names)
    assert "service_quality__revealed_volume" in names and any(n.startswith("respect_for_time__revealed_") for n in names)


def test_scaled_learner_scales_the_effect_with_risk_and_ignores_noise_features():
    rng = np.random.default_rng(5)
    n = 16_000
    x = rng.normal(size=(n, 4))
    base = 1 / (1 + np.exp(-(-2.0 + 1.2 * x[:, 1])))                  # churn risk driven by x1
    effect = base * (1 - base) * -0.8                                  # a log-odds shift: the effect grows with risk
    t = rng.random(n) < 0.5
    y = (rng.random(n) < base + t * effect).astype(int)
    rows = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "churned": y, "treated": t})
    up = fit_uplift(rows, ["a", "b", "c", "d"], seed=0, learner="scaled")
    pred = up.predict(rows)
    assert np.corrcoef(pred, effect)[0, 1] > 0.6
    assert abs(pred.mean() - effect.mean()) < 0.02
    assert up.scaled["penalty"] > 0


def test_calibration_shrinks_overconfident_scores_and_never_reverses_them():
    rng = np.random.default_rng(2)
    effect = rng.normal(-0.02, 0.03, 30_000)
    pseudo = effect + rng.normal(0, 0.4, 30_000)
    over = calibrate(4 * effect, pseudo)
    assert 0.15 < over.slope < 0.4                                    # 4x too spread: slope about 1/4
    mean, se = over.predict(np.array([-0.2, 0.0, 0.2]))
    assert mean[0] < mean[1] < mean[2] and (se > 0).all() and se[0] > se[1]
    reversed_ = calibrate(-effect, pseudo)
    assert reversed_.slope == 0.0 and abs(reversed_.intercept - pseudo.mean()) < 1e-12
    assert calibrate(effect / 5, pseudo).slope == 1.0                  # never stretched beyond the model's own spread


def test_offer_cost_prices_abuse_of_a_goodwill_credit_and_discounts_by_price():
    price = np.array([20.0, 45.0, 90.0, 45.0])
    treated = np.array([True, True, True, False])
    gw = offer_cost("goodwill_credit", price, realized=np.array([10.0, 40.0, 10.0, 0.0]), treated=treated)
    assert np.allclose(gw, 20.0)                                       # face value 10, twice that once abuse is seen
    assert offer_cost("goodwill_credit", price).tolist() == [10.0] * 4
    assert np.allclose(offer_cost("discount", price), 0.6 * price)
    with pytest.raises(ValueError, match="offer"):
        offer_cost("free_lunch", price)
    with pytest.raises(ValueError, match="same customers"):
        offer_cost("service_call", price, realized=np.ones(3), treated=np.ones(3, bool))


def test_plan_targets_only_where_the_saving_pays_and_says_so_when_nothing_does():
    value, cost = np.full(4, 100.0), np.full(4, 5.0)
    benefit = np.array([0.2, 0.1, 0.04, -0.1])
    p = plan(benefit, value, cost)
    assert p["target"].tolist() == [True, True, False, False] and p["offers"] == 2
    assert p["expected_money"] == pytest.approx(15.0 + 5.0)
    sure = plan(benefit, value, cost, se=np.array([0.1, 0.01, 0.0, 0.0]), confidence=0.95)   # the first is too uncertain
    assert sure["target"].tolist() == [False, True, False, False]
    none = plan(np.full(4, 0.01), value, cost)
    assert none["offers"] == 0 and "no customer's expected saving covers the offer's cost" in none["message"]
    # held-out outcomes that contradict the model withdraw the plan
    bad = plan(benefit, value, cost, pseudo=np.array([0.3, 0.2, 0.0, 0.0]))
    assert bad["offers"] == 0 and not bad["target"].any() and "no saving in held-out outcomes" in bad["message"]
    good = plan(benefit, value, cost, pseudo=np.array([-0.3, -0.1, 0.0, 0.0]))
    assert good["offers"] == 2 and good["estimated_money"] == pytest.approx(30.0)


def test_calibration_with_values_does_not_credit_the_valuable_customers_with_the_average_effect():
    rng = np.random.default_rng(4)
    n = 40_000
    value = np.where(rng.random(n) < 0.5, 100.0, 1000.0)
    effect = np.where(value > 500, -0.01, -0.05)                      # the valuable customers are the least persuadable
    pseudo = effect + rng.normal(0, 0.3, n)
    score = np.full(n, -0.03)                                          # a model that knows only the average
    cost = np.full(n, 15.0)
    naive = plan(-calibrate(score, pseudo).predict(score)[0], value, cost)
    assert naive["target"][value > 500].all()                          # 3% x 1000 > 15: the trap
    cal = calibrate(score, pseudo, value=value)
    mean, se = cal.predict(score, value)
    assert abs(mean[value > 500].mean() - (-0.01)) < 0.006 and abs(mean[value < 500].mean() - (-0.05)) < 0.006
    assert plan(-mean, value, cost, se=se)["offers"] == 0              # 1% x 1000 < 15 and 5% x 100 < 15
    with pytest.raises(ValueError, match="value"):
        cal.predict(score)


# --- a campaign month counted from the end of the world, and a world sized for the experiment -------------------------

@pytest.mark.parametrize("n_months", [12, 18, 24])
def test_a_campaign_month_counted_from_the_end_is_that_month_from_the_start(n_months):
    back, ahead = Campaign("service_call", month=-6, seed=1), Campaign("service_call", month=n_months - 6, seed=1)
    assert back.month_in(n_months) == n_months - 6
    w_back = simulate(300, n_months, seed=3, policy=Policy(campaign=back))
    w_ahead = simulate(300, n_months, seed=3, policy=Policy(campaign=ahead))
    assert w_back.events.equals(w_ahead.events) and w_back.truth.equals(w_ahead.truth)
    assert not w_back.events.equals(simulate(300, n_months, seed=3).events)            # the campaign did happen
    assert campaign_effects(300, n_months, 3, back).equals(campaign_effects(300, n_months, 3, ahead))
    rows, _ = campaigns.simulated_rows(back, n_customers=300, n_months=n_months, seed=3, traits=False)
    m = n_months - 6                                                                   # world starts 2024-01-01
    assert rows["snapshot_date"].unique().to_list() == [dt.date(2024 + m // 12, m % 12 + 1, 1)]
    assert rows["treated"].any() and not rows["treated"].all()


def test_a_campaign_month_outside_the_world_or_too_late_for_its_outcome_is_refused():
    for month in (12, -13):
        with pytest.raises(ValueError, match=r"Campaign.month must be in \[-12, 12\)"):
            Campaign("discount", month=month).month_in(12)
    with pytest.raises(ValueError, match="must be in"):
        simulate(200, 12, seed=0, policy=Policy(campaign=Campaign("discount", month=-13)))
    with pytest.raises(ValueError, match="its outcome needs 3"):                    # month 9 of 12: 2 months after it
        campaigns.simulated_rows(Campaign("discount", month=-3), n_customers=200, n_months=12, traits=False)


def test_the_campaign_world_is_capped_whatever_the_study_size(monkeypatch):
    monkeypatch.setattr(campaigns, "OWN_WORLD_CUSTOMERS", 800)
    c = Campaign("service_call", month=-6, seed=0)
    capped, _ = campaigns.simulated_rows(c, n_customers=10**6, n_months=12, max_customers=campaigns.OWN_WORLD_CUSTOMERS, traits=False)
    small, _ = campaigns.simulated_rows(c, n_customers=800, n_months=12, traits=False)
    assert capped.equals(small)                                                        # the world of 800, not of a million
    r = campaigns.simulated_campaign(c, n_customers=10**6, n_months=12, max_customers=campaigns.OWN_WORLD_CUSTOMERS)
    assert r["customers"] == 800 and r["month"] == 6 and r["held_out"] == small.height
    assert campaigns.simulated_campaign(c, n_customers=600, n_months=12, max_customers=800)["customers"] == 600


def test_campaign_rows_refuse_an_outcome_window_past_the_end_of_the_data():
    """Churn after the data ends is unseen: counted as stays, it would bias both arms' rates (and the effect) to zero."""
    w = simulate(600, 12, seed=1)
    table = build_features(w.customers, w.events, Snapshots(), as_of=w.as_of)
    last = w.as_of.date()                         # the world ends on the first of a month: 12 months after its start
    start = dt.date(last.year - (last.month <= 3), (last.month - 4) % 12 + 1, 1)   # 3 months before the end
    rows = campaign_rows(table, w.customers, w.events, start=start, share=0.5, seed=0, horizon_months=2)   # ends at the end
    assert rows.height > 0
    with pytest.raises(ValueError, match=r"runs past the end of the data .* use horizon_months=2 or an earlier start"):
        campaign_rows(table, w.customers, w.events, start=start, share=0.5, seed=0, horizon_months=3)
    bare = type("Table", (), {"frame": table.frame, "as_of": None})()   # no as_of: the last event says where the data ends
    with pytest.raises(ValueError, match="runs past the end of the data"):
        campaign_rows(bare, w.customers, w.events.filter(pl.col("timestamp") < pl.lit(start).dt.offset_by("2mo")), start=start,
                      share=0.5, seed=0, horizon_months=2)
