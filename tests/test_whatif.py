import numpy as np
import polars as pl
import pytest
from scipy.special import logit

from trustml.explanations import explain
from trustml.whatif import LeverCost, apply_levers, campaign, cheapest_plan, levers, what_if, whatif_vs_truth


@pytest.fixture(scope="module")
def latest(table):
    return table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())


@pytest.fixture(scope="module")
def broken_promise_row(latest):
    return latest.filter(pl.col("promise_broken__count_90d") >= 2).head(1)


def test_levers_come_from_the_registry_actionable_features_only(model):
    lvs = levers(model.registry)
    actionable = {f.name for f in model.registry.actionable()}
    covered = {lv.primary for lv in lvs} | {f for lv in lvs for f in lv.linked}
    assert covered == actionable
    pb = next(lv for lv in lvs if lv.name == "promise_broken")
    assert pb.primary == "promise_broken__count_90d" and (pb.low, pb.high) == (0.0, 5.0)
    assert set(pb.linked) == {"promise_broken__share_180d", "promise_broken__decayed_365d_hl60"}


def test_apply_levers_scales_linked_features_refuses_what_is_not_allowed_and_never_modifies_input(model, broken_promise_row):
    row = broken_promise_row
    before = row.clone()
    old = row["promise_broken__count_90d"][0]
    half = apply_levers(row, {"promise_broken": old - 1}, model.registry)
    assert row.equals(before)
    ratio = (old - 1) / old
    assert half["promise_broken__decayed_365d_hl60"][0] == pytest.approx(row["promise_broken__decayed_365d_hl60"][0] * ratio)
    with pytest.raises(ValueError, match=r"'marketing_contact'.*999 not allowed; allowed: whole numbers from 0 to 12"):
        apply_levers(row, {"marketing_contact": 999}, model.registry)  # an error, never a silent clip
    with pytest.raises(ValueError, match=r"0\.5 not allowed"):
        apply_levers(row, {"promise_broken": 0.5}, model.registry)   # counts are whole numbers
    with pytest.raises(KeyError, match="unknown lever"):
        apply_levers(row, {"tenure_days": 1}, model.registry)  # not actionable


def test_what_if_is_consistent_with_the_model_and_exactly_additive(model, broken_promise_row):
    row = broken_promise_row
    r = what_if(model, row, {"promise_broken": 0})
    changed = apply_levers(row, {"promise_broken": 0}, model.registry)
    assert r.risk_before == pytest.approx(float(model.predict_risk(row)[0]))
    assert r.risk_after == pytest.approx(float(model.predict_risk(changed)[0]))
    base = explain(model, changed).base_values[0]
    assert base + r.pillars["after"].sum() == pytest.approx(float(model.log_odds(changed)[0]), abs=1e-6)
    assert r.pillars.filter(pl.col("pillar") == "promises")["after"][0] < r.pillars.filter(pl.col("pillar") == "promises")["before"][0]
    assert r.customer.startswith("cust-") and row["customer_id"][0] not in r.summary()
    nothing = what_if(model, row, {})
    assert nothing.risk_after == nothing.risk_before


def test_cheapest_plan_reaches_the_target_and_matches_the_single_row_path(model, latest):
    risk = model.predict_risk(latest)
    row = latest[int(np.argmax(risk))]
    target = float(risk.max()) * 0.6
    plan = cheapest_plan(model, row, target=target)
    assert plan["reached"] and plan["risk_after"] < target
    # the batched search and the one-row path agree on the plan's risk
    assert float(model.predict_risk(apply_levers(row, plan["settings"], model.registry))[0]) == pytest.approx(plan["risk_after"])
    # cost is per lever (default fixed 10): no single lever reaches the target if the plan needs more
    assert plan["cost"] == pytest.approx(10.0 * len(plan["settings"]))
    if len(plan["settings"]) > 1:
        for lv in levers(model.registry):
            for v in lv.grid(row[lv.primary][0]):
                assert model.predict_risk(apply_levers(row, {lv.name: v}, model.registry))[0] >= target
    impossible = cheapest_plan(model, row, target=0.0)
    assert not impossible["reached"] and impossible["risk_after"] <= plan["risk_after"]


def test_costs_change_the_chosen_plan(model, latest):
    row = latest[int(np.argmax(model.predict_risk(latest)))]
    cheap = cheapest_plan(model, row, target=0.99)  # already below: no change is cheapest
    assert cheap["settings"] == {} and cheap["cost"] == 0
    target = float(model.predict_risk(row)[0]) * 0.99   # a small cut: more than one lever reaches it alone
    plan = cheapest_plan(model, row, target=target)
    assert plan["reached"] and len(plan["settings"]) == 1
    (first,) = plan["settings"]
    alone = [lv.name for lv in levers(model.registry) if lv.name != first and any(
        model.predict_risk(apply_levers(row, {lv.name: v}, model.registry))[0] < target for v in lv.grid(row[lv.primary][0]))]
    assert alone, "precondition: another lever reaches the target alone"
    dearer = cheapest_plan(model, row, target=target, costs={first: LeverCost(fixed=1e6)})
    assert dearer["reached"] and first not in dearer["settings"] and dearer["cost"] == pytest.approx(10.0)


def test_campaign_ranks_by_expected_value_and_exports(model, latest, tmp_path):
    value = np.full(latest.height, 400.0)
    plan = campaign(model, latest, value, top_n=12)
    assert plan.height == 12 and plan["rank"].to_list() == list(range(1, 13))
    assert plan["expected_value"].is_sorted(descending=True)
    acted = plan.filter(pl.col("action") != "no change")
    assert np.allclose(acted["expected_value"], (acted["risk"] - acted["risk_after"]) * 400.0 - acted["cost"])
    assert (plan.filter(pl.col("action") == "no change")["expected_value"] == 0).all()
    assert plan["customer"].str.starts_with("cust-").all()
    plan.write_csv(tmp_path / "p.csv")
    assert pl.read_csv(tmp_path / "p.csv").height == 12
    with pytest.raises(ValueError, match="repeats"):
        campaign(model, pl.concat([latest.head(3), latest.head(3)]), 1.0, top_n=2)


def test_whatif_effects_point_the_same_way_as_the_simulator_truth(model, table):
    test = table.frame.filter(pl.col("snapshot_date") == sorted(table.labelled()["snapshot_date"].unique())[-1])
    out = whatif_vs_truth(model, test, n_customers=3000, n_months=18, seed=7, top_n=60)
    by = {r["lever"]: r for r in out["by_lever"].iter_rows(named=True)}
    assert by["promises"]["true_mean_points"] < 0 and by["promises"]["model_mean_points"] < 0
    assert 0 <= out["best_lever_agreement"] <= 1
    assert 0.9 * 60 * out["by_lever"].height <= out["effects"].height <= 60 * out["by_lever"].height
    tiny = out["effects"].filter(pl.col("model_points").abs().is_between(0, 1e-9, closed="none"))
    assert tiny.is_empty()   # float noise (a row scored in a batch of another size) is no effect: it would rank at random


def test_risk_is_a_probability_after_any_lever_setting(model, latest):
    row = latest.head(1)
    for lv in levers(model.registry):
        for v in (lv.low, lv.high):
            r = what_if(model, row, {lv.name: v})
            assert 0 <= r.risk_after <= 1 and np.isfinite(logit(np.clip(r.risk_after, 1e-9, 1 - 1e-9)))


def test_no_change_leaves_every_feature_exactly_as_it_was(model, latest):
    """The 'no change' candidate of a plan search is the customer as they are: same features, same risk."""
    from trustml.whatif import _score_candidates
    risk = model.predict_risk(latest)
    for i in np.argsort(-risk)[:5]:
        row = latest[int(i)]
        combos, r, _ = _score_candidates(model, row, levers(model.registry), {}, 2, 5)
        assert combos[0] == {} and r[0] == float(model.predict_risk(row)[0])
        plan = cheapest_plan(model, row, target=0.0)
        assert plan["risk_before"] == float(model.predict_risk(row)[0])
        assert apply_levers(row, {}, model.registry).equals(row)
        lv = levers(model.registry)[0]
        assert apply_levers(row, {lv.name: row[lv.primary][0]}, model.registry).equals(row)  # its own value: no change


def test_plan_searches_only_propose_allowed_values(model, latest):
    row = latest[int(np.argmax(model.predict_risk(latest)))]
    for lv in levers(model.registry):
        for v in lv.grid(row[lv.primary][0], 7):
            assert lv.allows(v), (lv.name, v)
            if lv.integer:
                assert v == int(v)


def test_lever_semantics_lists_steps_and_whole_numbers():
    from trustml.whatif import Lever
    listed = Lever("products", "account", "products", (), "", "", 1, 4, direction=0, values=(1, 2, 3, 4), integer=True)
    assert listed.grid(2, 5) == [1.0, 3.0, 4.0] and not listed.allows(1.75) and listed.allows(4)
    assert listed.allowed_text() == "one of [1, 2, 3, 4]"
    stepped = Lever("discount", "account", "discount", (), "", "", 0, 30, direction=1, step=5)
    assert stepped.grid(22, 10) == [0.0, 5.0, 10.0, 15.0, 20.0] and not stepped.allows(7) and stepped.allows(25)
    assert stepped.allowed_text() == "steps of 5 from 0 to 30"
    binary = Lever("active", "engagement", "active", (), "", "", 0, 1, direction=-1, values=(0, 1), integer=True)
    assert binary.grid(0) == [1.0] and binary.grid(1) == [] and not binary.allows(0.25)
    frame = pl.DataFrame({"active": [0, 1, 1]})
    from trustml.features import Feature, FeatureRegistry
    reg = FeatureRegistry((Feature("active", "engagement", "", "", True, (0.0, 1.0), -1, False, values=(0.0, 1.0), integer=True),))
    out = apply_levers(frame, {"active": 1}, reg)
    assert out["active"].to_list() == [1, 1, 1] and out["active"].dtype == pl.Int64   # stays integer
    with pytest.raises(ValueError, match=r"lever 'active' \(active\): 0.25 not allowed; allowed: one of \[0, 1\]"):
        apply_levers(frame, {"active": 0.25}, reg)
    back = FeatureRegistry.from_dict(reg.to_dict())
    assert back == reg and FeatureRegistry.from_dict([{k: v for k, v in r.items() if k not in ("values", "step", "integer")}
                                                      for r in reg.to_dict()])["active"].values is None  # old sidecars load
