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
    crossfit_folds,
    exposures,
    lever_effect,
    lever_traits,
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
    # revealed tolerance, from complete months only: B engaged with 1 of April's 4 contacts; March's single contact
    # counts as a month with contact but not towards the busy-month share; A had no contact (unknown, null)
    ev2 = pl.concat([ev, _events([("B", d(2024, 3, 10), "marketing_contact", 1.0)])])
    may = frame.with_columns(snapshot_date=pl.lit(dt.date(2024, 5, 1)))
    r = revealed_traits(may, ev2, CAUSAL_LEVERS["respect_for_time"])
    assert r.row(1, named=True) == {"customer_id": "B", "snapshot_date": dt.date(2024, 5, 1),
                                    "revealed_multi_contact_engagement": 0.25, "revealed_contact_months": 2.0}
    assert r.row(0)[2:] == (None, 0.0)
    # point in time: on April 30 April is not over (its count could still grow): only March is seen
    assert revealed_traits(frame, ev2, CAUSAL_LEVERS["respect_for_time"]).row(1)[2:] == (None, 1.0)


def test_no_exposure_or_trait_sees_the_snapshot_date_or_later(world):
    """Leakage invariant: every exposure and trait at date d is the same when events from d on are deleted (d mid-month too)."""
    ids = world.customers["customer_id"].head(600)
    ev = world.events.filter(pl.col("customer_id").is_in(ids.implode()))
    for day in (dt.date(2024, 9, 1), dt.date(2024, 9, 17)):
        frame = pl.DataFrame({"customer_id": ids, "snapshot_date": [day] * len(ids)})
        past = ev.filter(pl.col("timestamp") < pl.lit(day).cast(pl.Datetime("us")))
        assert past.height < ev.height
        assert lever_traits(frame, past, levers=list(CAUSAL_LEVERS)).equals(lever_traits(frame, ev, levers=list(CAUSAL_LEVERS)))
        for lever in CAUSAL_LEVERS.values():
            assert exposures(frame, past, lever).equals(exposures(frame, ev, lever))
    # event types as plain strings (a user's own log) give the same answers as the Enum
    as_text = ev.with_columns(pl.col("event_type").cast(pl.String))
    assert exposures(frame, as_text, CAUSAL_LEVERS["service_quality"]).equals(exposures(frame, ev, CAUSAL_LEVERS["service_quality"]))


def test_contact_traits_do_not_encode_the_contacts_the_policy_removes(world):
    """A control computed from the treated events must not be the treatment: months with any contact are the same after a
    cap of one contact a month, and the busy-month engagement share does not depend on how many contacts came."""
    lever = CAUSAL_LEVERS["respect_for_time"]
    ids = world.customers["customer_id"].head(800)
    ev = world.events.filter(pl.col("customer_id").is_in(ids.implode()))
    mkt = pl.col("event_type").cast(pl.String) == "marketing_contact"
    first = pl.int_range(pl.len()).over("customer_id", pl.col("timestamp").dt.truncate("1mo"), order_by="timestamp") == 0
    capped = pl.concat([ev.filter(~mkt), ev.filter(mkt).filter(first)])
    frame = pl.DataFrame({"customer_id": ids, "snapshot_date": [dt.date(2025, 5, 1)] * len(ids)})
    seen, after = revealed_traits(frame, ev, lever), revealed_traits(frame, capped, lever)
    assert seen["revealed_contact_months"].sum() > 0
    assert seen["revealed_contact_months"].equals(after["revealed_contact_months"])
    assert (exposures(frame, capped, lever)["observed"] == 0).all()
    # doubling every busy month's contacts with the same engagement pattern leaves the share as it was
    busy = ev.filter(mkt).filter(pl.len().over("customer_id", pl.col("timestamp").dt.truncate("1mo")) >= 2)
    twice = pl.concat([ev, busy.with_columns(pl.col("timestamp") + pl.duration(seconds=1))])
    assert seen["revealed_multi_contact_engagement"].equals(revealed_traits(frame, twice, lever)["revealed_multi_contact_engagement"])


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


def test_crossfit_folds_are_the_folds_econml_draws_itself():
    """`lever_effects` draws the folds once for every lever: they must be EconML's own (cv=folds), or the estimates move."""
    from econml.dml import LinearDML
    from sklearn.linear_model import LinearRegression, LogisticRegression
    rng = np.random.default_rng(3)
    ids = np.repeat([f"c{i}" for i in range(300)], rng.integers(1, 6, 300))
    w = rng.normal(size=(len(ids), 2))
    t = w[:, 0] + rng.normal(size=len(ids))
    y = rng.random(len(ids)) < 1 / (1 + np.exp(1 + 0.5 * t - w[:, 1]))
    frame = pl.DataFrame({"customer_id": ids, "churned": y})
    splits = crossfit_folds(frame, folds=3, seed=5)
    tests = [set(ids[te]) for _, te in splits]
    assert not (tests[0] & tests[1] or tests[0] & tests[2] or tests[1] & tests[2])        # a customer in one test fold
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(len(ids)))
    residuals = []
    for cv in (3, splits):
        dml = LinearDML(model_y=LogisticRegression(), model_t=LinearRegression(), discrete_outcome=True, cv=cv, random_state=5)
        dml.fit(y.astype(float), t, W=w, groups=ids, cache_values=True)
        residuals.append(np.concatenate([np.ravel(r) for r in dml.residuals_[:2]]))
    np.testing.assert_array_equal(residuals[0], residuals[1])


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
    assert any("__revealed_multi_contact_engagement" in c for c in contact.controls) and any("__revealed_volume" in c for c in contact.controls)
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


def test_each_causal_lever_pulls_the_same_simulator_policy_as_the_explanation_checks():
    """`Study.lever_truth` simulates `explanations.LEVERS` once for the truth of explanations, what-ifs and causal effects."""
    from trustml.causal import CAUSAL_LEVERS
    from trustml.explanations import LEVERS
    assert {name: lever.policy for name, lever in CAUSAL_LEVERS.items()} == LEVERS
