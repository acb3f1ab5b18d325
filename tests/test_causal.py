import datetime as dt

import numpy as np
import polars as pl
import pytest

from trustml.causal import (
    CAUSAL_LEVERS,
    _dml_final,
    causal_campaign,
    causal_for_rows,
    causal_vs_truth,
    controls_for,
    exposures,
    lever_effect,
    load_effects,
    revealed_traits,
    save_effects,
    segment_what_if,
    simulator_truth,
)
from trustml.pillars import EVENT_TYPES


def _events(rows):
    return pl.DataFrame(rows, schema={"customer_id": pl.String, "timestamp": pl.Datetime("us"), "event_type": pl.String,
                                      "value": pl.Float64}, orient="row").with_columns(pl.col("event_type").cast(pl.Enum(list(EVENT_TYPES))))


def test_exposures_are_point_in_time_recency_weighted_and_transformed_by_the_policy():
    d = dt.datetime
    ev = _events([("A", d(2024, 3, 1), "promise_broken", None),           # 60 days before: weight 0.5
                  ("A", d(2024, 4, 30), "promise_broken", None),          # at the snapshot: the future, not counted
                  ("A", d(2023, 1, 1), "promise_broken", None),           # over a year before: outside the window
                  ("A", d(2024, 4, 1), "empathy_score", 4.0),             # 29 days before
                  ("A", d(2024, 4, 2), "empathy_score", 5.0),
                  ("B", d(2024, 4, 1), "marketing_contact", 1.0), ("B", d(2024, 4, 2), "marketing_contact", 0.0),
                  ("B", d(2024, 4, 3), "marketing_contact", 0.0), ("B", d(2024, 4, 4), "marketing_contact", 0.0)])
    frame = pl.DataFrame({"customer_id": ["A", "B"], "snapshot_date": [dt.date(2024, 4, 30)] * 2})
    p = exposures(frame, ev, CAUSAL_LEVERS["promises"])
    assert p["observed"].to_list() == pytest.approx([0.5, 0.0]) and p["policy"].to_list() == [0.0, 0.0]
    e = exposures(frame, ev, CAUSAL_LEVERS["empathy"])
    w1, w2 = 0.5 ** (29 / 60), 0.5 ** (28 / 60)
    assert e["observed"][0] == pytest.approx(1 * w1 + 2 * w2)
    assert e["policy"][0] == pytest.approx(2 * w1 + 3 * w2)  # a 5 can still be better: the score is capped, the experience is not
    m = exposures(frame, ev, CAUSAL_LEVERS["respect_for_time"])
    # B's 1st contact of April is kept by a cap of one; the 2nd and 3rd (ignored) and 4th (ignored) count
    assert m["observed_0"][1] == 0 and m["observed_1"][1] > 0 and m["observed_3"][1] > 0 and m["policy"][1] == 0
    # revealed tolerance: B engaged with the 1st contact of April, ignored the 2nd-4th; A had no contact (unknown, null)
    r = revealed_traits(frame, ev, CAUSAL_LEVERS["respect_for_time"])
    assert r.row(1, named=True) == {"customer_id": "B", "snapshot_date": dt.date(2024, 4, 30), "revealed_welcome_rank1": 1.0,
                                    "revealed_welcome_rank2": 0.0, "revealed_welcome_rank3": 0.0, "revealed_welcome_rank4": 0.0}
    assert r.row(0)[2:] == (None, None, None, None)
    assert revealed_traits(frame.with_columns(snapshot_date=pl.lit(dt.date(2024, 4, 2))), ev, CAUSAL_LEVERS["respect_for_time"]
                           ).row(1)[2:] == (1.0, None, None, None)   # point in time: the 2nd contact (Apr 2) is not seen yet


def test_controls_leave_out_what_the_policy_changes_and_mediators(table):
    names = controls_for(table.registry, CAUSAL_LEVERS["service_quality"])
    assert "ticket_opened__count_90d" in names and "usage__count_90d" in names
    assert not any(n.split("__")[0] in ("resolution_hours", "ticket_reopened", "csat_score", "referral_given") for n in names)


def test_final_stage_recovers_theta_and_its_clustered_interval_covers_it():
    rng = np.random.default_rng(0)
    covered = 0
    for _rep in range(40):
        g = np.repeat(np.arange(400), 5)
        u = rng.normal(size=400)[g]                     # a customer effect shared by the customer's rows
        t = rng.normal(size=(2000, 2))
        y = t @ np.array([0.3, -0.2]) + u + rng.normal(size=2000)
        theta, cov = _dml_final(y, t, g)
        se = np.sqrt(np.diag(cov))
        covered += bool(abs(theta[0] - 0.3) < 1.96 * se[0])
    assert covered >= 34                                # about 95% of 40


@pytest.fixture(scope="module")
def promises_effect(table, world):
    return lever_effect(table.labelled(), world.events, table.registry, "promises")


def test_promise_effect_estimate_is_close_to_the_simulator_truth(table, promises_effect):
    rows = table.labelled()
    truth = simulator_truth(rows, n_customers=3000, n_months=18, seed=7, levers=["promises"])
    r = causal_vs_truth({"promises": promises_effect}, truth).row(0, named=True)
    assert r["true_points"] < 0 and r["causal_points"] < 0
    assert r["rel_error"] < 0.5 and r["spearman"] > 0.5
    assert r["ci_low_points"] < r["causal_points"] < r["ci_high_points"]
    assert 0 <= promises_effect.overlap["share_extreme"] <= 1


def test_causal_for_rows_gives_an_interval_per_row_and_pseudonymised_ids(table, world, promises_effect):
    latest = table.latest().head(50)
    out = causal_for_rows({"promises": promises_effect}, latest, world.events)
    assert out.height == 50 and not set(out["customer"]) & set(latest["customer_id"])
    assert (out["ci_low_points"] <= out["causal_points"]).all() and (out["causal_points"] <= out["ci_high_points"]).all()


def test_segment_what_if_filters_scores_once_and_puts_causal_beside_model(model, table, world, promises_effect):
    latest = table.latest()
    seg = segment_what_if(model, latest, "promises", where=pl.col("plan") == "premium", value=100.0,
                          effects={"promises": promises_effect}, events=world.events)
    n = latest.filter(pl.col("plan") == "premium").height
    assert seg.rows.height == n and seg.summary.height == 2
    causal = seg.summary.row(1, named=True)
    assert causal["saved_low"] <= causal["churners_saved"] <= causal["saved_high"]
    assert causal["money"] == pytest.approx(100 * causal["churners_saved"])
    # nobody with no broken promise is moved by the causal answer
    assert (seg.rows["causal_points"] <= 1e-12).all()
    model_only = segment_what_if(model, latest, "promises")
    assert model_only.summary.height == 1 and model_only.rows.height == latest.height
    with pytest.raises(ValueError, match="no customer"):
        segment_what_if(model, latest, "promises", where=pl.col("plan") == "nope")
    with pytest.raises(KeyError):
        segment_what_if(model, latest, "free_pizza")


def test_causal_campaign_acts_only_where_the_effect_pays(table, world, promises_effect):
    latest = table.latest()
    risk = np.linspace(0, 1, latest.height)
    out = causal_campaign({"promises": promises_effect}, latest, world.events, risk, 500.0, costs={"promises": 5.0}, top_n=40)
    assert out.height == 40 and out["rank"].to_list() == list(range(1, 41))
    acted = out.filter(pl.col("action") != "no action")
    assert (acted["expected_value"] > 0).all() and (out.filter(pl.col("action") == "no action")["expected_value"] == 0).all()
    assert np.allclose(acted["expected_value"], -acted["causal_points"] / 100 * 500 - 5)


def test_effects_round_trip_without_pickle(tmp_path, table, world, promises_effect):
    rows = table.labelled()
    contact = lever_effect(rows.filter(pl.col("snapshot_date") >= pl.col("snapshot_date").max() - pl.duration(days=200)),
                           world.events, table.registry, "respect_for_time")
    assert any("__revealed_welcome" in c for c in contact.controls) and any("__revealed_volume" in c for c in contact.controls)
    effects = {"promises": promises_effect, "respect_for_time": contact}
    folder = save_effects(effects, tmp_path / "effects")
    assert not [p for p in folder.iterdir() if p.suffix not in (".json", ".parquet", ".txt")]
    back = load_effects(folder)
    latest = table.latest().head(300)
    assert causal_for_rows(back, latest, world.events).equals(causal_for_rows(effects, latest, world.events))
    # one customer's own events (as the explorer passes them) are enough, even when some event types are absent
    one = latest.head(1)
    own = world.events.filter(pl.col("customer_id") == one["customer_id"][0], pl.col("event_type").cast(pl.String) != "ticket_opened")
    assert causal_for_rows(back, one, own).height == 2
    for name, e in effects.items():
        assert back[name].summary() == e.summary() and back[name].ate_on(np.arange(e.per_row.height) % 2 == 0) == e.ate_on(
            np.arange(e.per_row.height) % 2 == 0)
    # no raw id is written
    assert not set(back["promises"].per_row["customer_id"]) & set(rows["customer_id"])
    (folder / "effects.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="format"):
        load_effects(folder)
