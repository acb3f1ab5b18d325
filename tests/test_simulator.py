import datetime as dt
import io

import numpy as np
import polars as pl
import pytest

from trustml.contract import validate
from trustml.simulator import Campaign, Policy, SimConfig, campaign_effects, read_world, simulate, true_effects, write_world


def _bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def test_same_seed_gives_byte_identical_tables():
    a, b = simulate(800, 12, seed=5), simulate(800, 12, seed=5)
    for name in ("customers", "events", "truth"):
        assert _bytes(getattr(a, name)) == _bytes(getattr(b, name)), name
    c = simulate(800, 12, seed=6)
    assert _bytes(a.events) != _bytes(c.events)


def test_simulated_tables_pass_the_validator(world):
    validate(world.customers, world.events, as_of=world.as_of)


def test_monthly_churn_rate_is_plausible_and_configurable(world):
    rate = world.truth["churned_this_month"].mean()
    assert 0.01 < rate < 0.08, rate
    high = simulate(3000, 18, seed=7, config=SimConfig(base_logit=-3.0))
    assert high.truth["churned_this_month"].mean() > rate * 1.5


def test_truth_is_additive_on_the_logit_scale(world):
    t = world.truth
    contrib = t.select(pl.sum_horizontal(pl.col("^contrib_.*$"))).to_series().to_numpy()
    assert np.allclose(t["logit"].to_numpy() - contrib, SimConfig().base_logit)
    assert np.allclose(1 / (1 + np.exp(-t["logit"].to_numpy())), t["churn_prob"].to_numpy())


@pytest.fixture(scope="module")
def effects():
    return true_effects(3000, 18, 7, {"keep": Policy(keep_promises=True), "empathy": Policy(empathy_boost=1.0),
                                      "cap1": Policy(max_marketing_per_month=1), "cap0": Policy(max_marketing_per_month=0)})


def test_keeping_promises_lowers_true_churn(world, effects):
    eff = effects["effect_keep"].to_numpy()
    assert (eff <= 1e-12).all()
    assert eff.mean() < -0.001


def test_empathetic_resolution_lowers_true_churn(effects):
    assert effects["effect_empathy"].mean() < -0.001


def test_contact_fatigue_is_non_monotone(effects):
    # cutting contacts to one a month helps on average, cutting them to zero helps less: a little contact is welcome
    assert effects["effect_cap1"].mean() < 0
    assert effects["effect_cap1"].mean() < effects["effect_cap0"].mean()


def test_fast_empathetic_resolution_can_leave_trust_higher_than_before():
    from trustml.simulator import _Block
    block = _Block(1, 2000, 12, seed=1, block=0, cfg=SimConfig())
    grids, _ = block.play(Policy(resolution_speedup=100.0, empathy_boost=2.0))
    base, _ = block.play(Policy())
    # with every ticket fixed fast and warmly, customers with tickets end up with higher service trust than without any
    with_tickets = block.n_tix.sum(axis=1) > 2
    sq = -grids["contrib"]["service_quality"][:, -1]
    assert sq[with_tickets].mean() > 0 > -base["contrib"]["service_quality"][:, -1][with_tickets].mean()


def test_policies_use_common_random_numbers():
    same = true_effects(500, 12, 3, {"noop": Policy()})
    assert (same["effect_noop"].abs() == 0).all()


def test_write_and_read_round_trip(tmp_path, world):
    out = write_world(world, tmp_path / "w")
    customers, events = read_world(out)
    assert customers.equals(world.customers) and events.equals(world.events)
    assert (out / "truth").is_dir() and (out / "world.json").exists()


def test_streaming_writer_gives_the_same_tables(tmp_path, monkeypatch):
    import trustml.simulator as sim
    monkeypatch.setattr(sim, "CHUNK_SIZE", 400)  # several blocks
    out = sim.simulate_to_dir(1000, 12, 4, tmp_path / "s")
    assert len(list((out / "events").iterdir())) == 3
    c, e = read_world(out)
    w = sim.simulate(1000, 12, 4)
    assert c.equals(w.customers) and e.equals(w.events) and sim.read_truth(out).equals(w.truth)


def test_a_smaller_world_is_the_leading_customers_of_a_larger_one_truth_included(monkeypatch):
    import trustml.simulator as sim
    monkeypatch.setattr(sim, "CHUNK_SIZE", 300)
    small, large = sim.simulate(600, 12, 5), sim.simulate(1000, 12, 5)
    lead = sim.leading_customers(600)
    assert small.customers.equals(large.customers.filter(lead)) and small.events.equals(large.events.filter(lead))
    assert small.truth.equals(large.truth.filter(lead))
    pols = {"kept": Policy(keep_promises=True)}
    assert sim.true_effects(600, 12, 5, pols).equals(sim.true_effects(1000, 12, 5, pols).filter(lead))
    with pytest.raises(ValueError, match="whole blocks"):
        sim.leading_customers(450)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_customers"):
        simulate(0, 12)


def test_a_policy_change_from_a_month_on_leaves_earlier_months_alone():
    # a change to the value a knob already has is no change: the world is byte-identical to the default
    same = SimConfig(changes=((4, "price_rise_month_share", SimConfig().price_rise_month_share), (2, "price_rise_unannounced_share", 0.5)))
    a, b = simulate(800, 12, seed=3), simulate(800, 12, seed=3, config=same)
    for name in ("customers", "events", "truth"):
        assert _bytes(getattr(a, name)) == _bytes(getattr(b, name)), name
    # more, and all unannounced, price rises from month 8: the truth before it is untouched, after it differs
    changed = simulate(800, 12, seed=3, config=SimConfig(changes=((8, "price_rise_month_share", 0.3), (8, "price_rise_unannounced_share", 1.0))))
    cut = pl.lit(dt.date(2024, 9, 1))  # month 8 of a world starting 2024-01-01
    assert a.truth.filter(pl.col("month_start") < cut).equals(changed.truth.filter(pl.col("month_start") < cut))
    assert not a.truth.filter(pl.col("month_start") >= cut).equals(changed.truth.filter(pl.col("month_start") >= cut))

    def rises(w, kind):
        return w.events.filter((pl.col("event_type") == kind) & (pl.col("timestamp") >= cut.cast(pl.Datetime("us")))).height
    assert rises(changed, "price_change_unannounced") > 3 * rises(a, "price_change_unannounced")
    assert rises(changed, "price_change_announced") == 0
    with pytest.raises(ValueError, match="unknown knob"):
        simulate(50, 6, seed=0, config=SimConfig(changes=((2, "tickets_per_month", 1.0),)))


def test_campaign_leaves_the_world_before_it_alone_and_has_sleeping_dogs():
    c = Campaign("service_call", month=8)
    base, camp = simulate(1500, 12, seed=3), simulate(1500, 12, seed=3, policy=Policy(campaign=c))
    cut = dt.date(2024, 10, 1)                                         # month 9: the offer moves trust from the month after
    assert base.truth.filter(pl.col("month_start") < cut).equals(camp.truth.filter(pl.col("month_start") < cut))
    assert not base.truth.equals(camp.truth)
    eff = campaign_effects(1500, 12, 3, c)
    assert eff["effect"].filter(eff["contact_averse"]).mean() > 0 > eff["effect"].filter(~eff["contact_averse"]).mean()
    good = campaign_effects(1500, 12, 3, Campaign("goodwill_credit", month=8))
    assert (good.filter("abuser")["effect"].abs() < 1e-12).all() and good.filter(~pl.col("abuser"))["effect"].mean() < 0
    assert good.filter("abuser")["cost"].min() > good.filter(~pl.col("abuser"))["cost"].max()
    with pytest.raises(ValueError, match="offer"):
        Campaign("free_pizza", month=3)


def _fingerprint(frames) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, df in frames:
        h.update(name.encode())
        h.update(repr(df.schema).encode())
        h.update(df.write_csv().encode())
    return h.hexdigest()


def test_the_default_world_is_unchanged_by_optional_features():
    # fingerprints computed from the simulator before the values pillar was added (schema + every value):
    # an opt-in feature (values events, campaigns) must never move the default world or its true effects
    w = simulate(1500, 18, seed=3)
    assert _fingerprint([("customers", w.customers), ("events", w.events), ("truth", w.truth)]) == \
        "56d4fc1ab6610b797af7a066fddf637967cd8bb20087cec14182b0300ef190f7"
    e = true_effects(600, 12, 2, {"keep": Policy(keep_promises=True), "cap": Policy(max_marketing_per_month=1),
                                  "camp": Policy(campaign=Campaign("discount", 6))})
    assert _fingerprint([("effects", e)]) == "9e11d4d2f49d1ef262b10a7eef3ce0db6a345fb7ceef1f506f22b02b9f16fb51"


def test_values_events_move_trust_most_for_customers_who_care():
    from trustml.features import DEFAULT_SPEC, VALUES_SPEC, Snapshots, build_features
    from trustml.simulator import _Block
    cfg = SimConfig(values_events=True)
    w = simulate(2000, 18, seed=3, config=cfg)
    validate(w.customers, w.events, as_of=w.as_of)
    counts = dict(w.events.group_by(pl.col("event_type").cast(pl.String)).len().iter_rows())
    assert all(counts.get(t, 0) > 0 for t in ("ethics_incident", "values_commitment", "values_complaint")), counts
    # the other pillars' draws are untouched: same customers, same non-values events
    base = simulate(2000, 18, seed=3)
    assert w.customers.equals(base.customers)
    first = w.events.filter(pl.col("event_type").cast(pl.String).is_in(["ethics_incident", "values_commitment"]))["timestamp"].min()
    # (referral timestamps are drawn in one vector over all months, so later referrals shift earlier ones' times)
    before = lambda ev: ev.with_columns(pl.col("event_type").cast(pl.String)).filter(  # noqa: E731
        pl.col("timestamp") < first.replace(day=1), ~pl.col("event_type").str.starts_with("values_"),
        pl.col("event_type") != "referral_given")
    assert before(w.events).height > 0 and before(w.events).equals(before(base.events))
    cut = pl.col("month_start") <= first.date()
    assert w.truth.filter(cut).drop("contrib_values").equals(base.truth.filter(cut))
    # values features through the normal feature specs
    table = build_features(w.customers, w.events, Snapshots(), DEFAULT_SPEC + VALUES_SPEC, as_of=w.as_of)
    values = [f.name for f in table.registry if f.pillar == "values"]
    assert len(values) == len(VALUES_SPEC) and table.frame["ethics_incident__decayed_365d_hl60"].max() > 0
    # the truth: values trust enters the churn logit, and an incident costs those who care far more
    assert "contrib_values" in w.truth.columns and "contrib_values" not in base.truth.columns
    block = _Block(1, 2000, 18, seed=3, block=0, cfg=cfg)
    grids, _ = block.play(Policy())
    v = block.values_state()
    hit = v["exposed_inc"].any(axis=1)
    harm = grids["contrib"]["values"].max(axis=1)   # highest (most churn-raising) values contribution, per customer
    assert harm[hit & v["cares"]].mean() > 3 * harm[hit & ~v["cares"]].mean() > 0
    # churn is higher with values events than without for those who care (same draws otherwise)
    g0, _ = _Block(1, 2000, 18, seed=3, block=0, cfg=SimConfig()).play(Policy())
    lift = (grids["hazard"] - g0["hazard"])[v["exposed_inc"]]
    assert lift.mean() > 0
