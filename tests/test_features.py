import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import shared_data

from trustml.datasets import read_cdnow
from trustml.features import DEFAULT_SPEC, FeatureSpec, FeatureTable, Snapshots, build_features

START = dt.datetime(2024, 1, 1)
TYPES = ["ticket_opened", "promise_broken", "promise_kept", "usage", "marketing_contact", "cancellation"]
SPEC = (
    FeatureSpec("promise_broken", "count", 30), FeatureSpec("promise_broken", "share", 60, denominator="promise_kept"),
    FeatureSpec("usage", "mean", 45), FeatureSpec("usage", "sum", 45), FeatureSpec("usage", "trend", 90),
    FeatureSpec("usage", "days_since", 60), FeatureSpec("marketing_contact", "decayed", 90),
    FeatureSpec("ticket_opened", "max", 30), FeatureSpec("tenure_days", "attribute", pillar="account"),
    FeatureSpec("usage", "rate", 365),
)

event = st.tuples(st.integers(0, 4), st.integers(0, 200 * 24), st.sampled_from(TYPES[:-1]),
                  st.one_of(st.none(), st.floats(0, 100)))


def _tables(rows):
    customers = pl.DataFrame({"customer_id": [f"c{i}" for i in range(5)], "signup_date": [START.date()] * 5})
    # every type occurs at least once, early, so the feature set never depends on the future
    seed = [(0, 1, t, 1.0) for t in TYPES[:-1]]
    ev = pl.DataFrame([(f"c{c}", START + dt.timedelta(hours=h), t, v) for c, h, t, v in seed + rows],
                      schema={"customer_id": pl.String, "timestamp": pl.Datetime("us"), "event_type": pl.String, "value": pl.Float64},
                      orient="row")
    return customers, ev


SNAPS = Snapshots(every="1mo", start=dt.date(2024, 2, 1), end=dt.date(2024, 7, 1), churn="inactivity", active_gap_days=400)
AS_OF = dt.datetime(2024, 9, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=st.lists(event, max_size=40), future=st.lists(event, max_size=15), snap=st.integers(1, 6),
       mutate=st.sampled_from(["add", "remove", "change"]))
def test_events_at_or_after_a_snapshot_never_change_its_features(past, future, snap, mutate):
    d = dt.datetime(2024, snap + 1, 1)
    cutoff_h = int((d - START).total_seconds() // 3600)
    before = [r for r in past if r[1] < cutoff_h]
    after = [(c, cutoff_h + h % (24 * 60), t, v) for c, h, t, v in future]  # at or after d
    customers, base = _tables(before + after)
    if mutate == "add":
        _, other = _tables(before + after + [(c, cutoff_h + 5, t, v) for c, _, t, v in future])
    elif mutate == "remove":
        _, other = _tables(before)
    else:
        _, other = _tables(before + [(c, h, "ticket_opened", 7.0) for c, h, _, _ in after])
    a = build_features(customers, base, SNAPS, SPEC, as_of=AS_OF).frame.filter(pl.col("snapshot_date") == d.date())
    b = build_features(customers, other, SNAPS, SPEC, as_of=AS_OF).frame.filter(pl.col("snapshot_date") == d.date())
    feats = [c for c in a.columns if c != "churned"]
    # same rows; values equal up to float summation order (a leak would move them by whole events)
    assert a.select("customer_id", "snapshot_date").equals(b.select("customer_id", "snapshot_date"))
    from polars.testing import assert_frame_equal
    assert_frame_equal(a.select(feats), b.select(feats), check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_labels_look_only_at_their_window(world, table):
    truth = world.truth.select("customer_id", pl.col("month_start").alias("snapshot_date"), "churned_this_month")
    j = table.labelled().join(truth, on=["customer_id", "snapshot_date"], how="inner")
    assert j.height == table.labelled().height
    assert (j["churned"] == j["churned_this_month"].cast(pl.Int8)).all()


def test_last_snapshot_is_unlabelled_for_scoring(table):
    last = table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())
    assert last.height > 0 and last["churned"].null_count() == last.height


def test_table_is_deterministic_and_sorted(world, table):
    again = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    assert again.frame.equals(table.frame)
    assert table.frame.equals(table.frame.sort("snapshot_date", "customer_id"))


def test_registry_describes_every_feature(table):
    reg = table.registry
    assert reg.names == table.frame.columns[3:]
    for f in reg:
        assert f.pillar and f.description and f.name
    assert reg["promise_broken__count_90d"].actionable and reg["promise_broken__count_90d"].direction == 1
    assert reg["marketing_contact__count_30d"].direction == 0  # non-monotone on purpose
    assert set(reg.pillars) >= {"service_quality", "empathy", "promises", "transparency", "respect_for_time", "advocacy"}


def test_features_degrade_gracefully_when_a_pillar_has_no_data(world):
    events = world.events.filter(~pl.col("event_type").cast(pl.String).str.starts_with("promise"))
    t = build_features(world.customers, events, Snapshots(), as_of=world.as_of)
    assert "promises" not in t.registry.pillars
    assert any("promise_broken" in k for k in t.dropped)


def test_round_trip_to_parquet(tmp_path, table):
    table.write(tmp_path / "f.parquet")
    back = FeatureTable.read(tmp_path / "f.parquet")
    assert back.frame.equals(table.frame) and back.registry == back.registry and back.registry.names == table.registry.names


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="unknown aggregation"):
        FeatureSpec("usage", "median", 30)
    with pytest.raises(ValueError, match="duplicate feature names"):
        from trustml.features import _resolve_spec
        _resolve_spec(DEFAULT_SPEC + DEFAULT_SPEC[:1], {"ticket_opened"}, set())


def test_cdnow_by_inactivity():
    customers, events = read_cdnow(shared_data("cdnow"))
    assert events.height == 69_659 and customers.height == 23_570
    spec = (FeatureSpec("purchase", "count", 90), FeatureSpec("purchase", "count", 365), FeatureSpec("purchase", "sum", 365),
            FeatureSpec("purchase", "days_since", 365), FeatureSpec("purchase", "trend", 180),
            FeatureSpec("tenure_days", "attribute", pillar="account"))
    snaps = Snapshots(every="1mo", start=dt.date(1997, 4, 1), end=dt.date(1998, 4, 1), horizon="90d", churn="inactivity",
                      active_gap_days=365)
    t = build_features(customers, events, snaps, spec)
    lab = t.labelled()
    assert lab.height > 10_000
    assert 0.5 < lab["churned"].mean() < 0.98  # most CDNOW customers never come back
    assert set(t.registry.pillars) == {"engagement", "account"}


def test_lead_time_shifts_the_label_window(world):
    lead = build_features(world.customers, world.events, Snapshots(lead="1mo"), as_of=world.as_of)
    truth = world.truth.select("customer_id", "month_start", "churned_this_month")
    # label at d with a one-month lead = churn in the month after d's month
    nxt = truth.with_columns(pl.col("month_start").dt.offset_by("-1mo").alias("snapshot_date"))
    j = lead.labelled().join(nxt, on=["customer_id", "snapshot_date"], how="left")
    assert (j["churned"] == j["churned_this_month"].fill_null(False).cast(pl.Int8)).all()


def test_streaming_one_snapshot_at_a_time_gives_the_same_table(world, table):
    from polars.testing import assert_frame_equal
    streamed = build_features(world.customers.lazy(), world.events.lazy(), Snapshots(), as_of=world.as_of, streaming=True)
    assert_frame_equal(streamed.frame, table.frame, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_inactivity_with_a_lead_ignores_activity_inside_the_lead_window():
    d0 = dt.datetime(2024, 1, 1)
    customers = pl.DataFrame({"customer_id": ["a", "b", "c"], "signup_date": [dt.date(2023, 12, 1)] * 3})
    rows = [("a", d0 - dt.timedelta(days=5)), ("a", dt.datetime(2024, 3, 10)),  # active only inside the lead month
            ("b", d0 - dt.timedelta(days=5)), ("b", dt.datetime(2024, 4, 10)),  # active inside the label window
            ("c", d0 - dt.timedelta(days=5)), ("c", dt.datetime(2024, 6, 1))]   # back only after it
    events = pl.DataFrame({"customer_id": [r[0] for r in rows], "timestamp": [r[1] for r in rows], "event_type": ["purchase"] * 6,
                           "value": [1.0] * 6})
    snaps = Snapshots(every="1mo", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 1), horizon="1mo", lead="1mo",
                      churn="inactivity", active_gap_days=120)
    t = build_features(customers, events, snaps, (FeatureSpec("purchase", "count", 90),), as_of=dt.datetime(2024, 7, 1))
    labels = dict(zip(t.frame["customer_id"], t.frame["churned"], strict=True))
    assert labels == {"a": 1, "b": 0, "c": 1}


def test_days_since_never_exceeds_tenure():
    """A 2-day-old customer with no event has not gone '365 days without one': the fill is capped at tenure."""
    customers = pl.DataFrame({"customer_id": ["old", "new"], "signup_date": [dt.date(2023, 1, 1), dt.date(2024, 2, 28)]})
    events = pl.DataFrame({"customer_id": ["old", "old", "new"],
                           "timestamp": [dt.datetime(2023, 6, 1), dt.datetime(2024, 2, 10), dt.datetime(2024, 2, 29)],
                           "event_type": ["referral_given", "usage", "usage"], "value": [None, 1.0, 1.0]})
    spec = [s for s in DEFAULT_SPEC if s.name in ("referral_given__days_since_365d", "usage__days_since_90d", "tenure_days")]
    t = build_features(customers, events, Snapshots(churn="inactivity", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 1)),
                       spec, as_of=dt.datetime(2024, 3, 2))
    new = t.frame.filter(pl.col("customer_id") == "new").row(0, named=True)
    old = t.frame.filter(pl.col("customer_id") == "old").row(0, named=True)
    assert new["referral_given__days_since_365d"] == new["tenure_days"] == 2.0 and new["usage__days_since_90d"] == 1.0
    assert old["referral_given__days_since_365d"] == 274.0 and old["usage__days_since_90d"] == 20.0   # facts unchanged


def test_rate_is_events_a_month_over_the_window_or_the_tenure():
    """rate: the window's count x 30 / the days covered (the tenure if shorter, at least 30); no event is 0."""
    customers = pl.DataFrame({"customer_id": ["old", "mid", "new", "idle"],
                              "signup_date": [dt.date(2022, 1, 1), dt.date(2023, 12, 2), dt.date(2024, 2, 20), dt.date(2023, 1, 1)]})
    old = [dt.datetime(2023, 3, 10) + dt.timedelta(days=8 * i) for i in range(40)] + [dt.datetime(2022, 6, 1)] * 5  # 5 outside 365d
    mid = [dt.datetime(2023, 12, 10) + dt.timedelta(days=i) for i in range(45)]
    new = [dt.datetime(2024, 2, 25)] * 3
    rows = [("old", t) for t in old] + [("mid", t) for t in mid] + [("new", t) for t in new] + [("idle", dt.datetime(2023, 2, 1))]
    events = pl.DataFrame({"customer_id": [c for c, _ in rows], "timestamp": [t for _, t in rows],
                           "event_type": ["usage"] * (len(rows) - 1) + ["ticket_opened"], "value": [None] * len(rows)},
                          schema_overrides={"value": pl.Float64})
    spec = (FeatureSpec("usage", "rate", 365), FeatureSpec("usage", "count", 365), FeatureSpec("tenure_days", "attribute", pillar="account"))
    t = build_features(customers, events, Snapshots(churn="inactivity", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 1),
                                                    active_gap_days=400), spec, as_of=dt.datetime(2024, 3, 2))
    got = dict(zip(t.frame["customer_id"], t.frame["usage__rate_365d"], strict=True))
    count = dict(zip(t.frame["customer_id"], t.frame["usage__count_365d"], strict=True))
    assert count["old"] == 40 and got["old"] == pytest.approx(40 * 30 / 365)
    assert got["mid"] == pytest.approx(45 * 30 / 90)        # tenure 90 days < 365: its own months
    assert got["new"] == pytest.approx(3.0)                  # 10 days old: at least 30 days covered
    assert got["idle"] == 0.0
    assert t.registry["usage__rate_365d"].unit == "events a month"


def test_event_summary_counts_by_hand_and_reads_a_lazy_log_the_same():
    from trustml.features import event_summary
    ev = pl.DataFrame({"customer_id": ["a", "a", "b", "c", "c", "c"],
                       "event_type": ["promise_broken", "promise_broken", "promise_broken", "csat", "mystery", "csat"]})
    out = event_summary(ev)
    assert out.rows() == [("other", "mystery", 1, 1, 1.0), ("promises", "promise_broken", 3, 2, 1.5),
                          ("service_quality", "csat", 2, 1, 2.0)]
    assert event_summary(ev.lazy()).equals(out)


def test_signal_profile_counts_by_hand_and_reads_a_scan_the_same():
    from trustml.features import FeatureRegistry, signal_profile
    frame = pl.DataFrame({"customer_id": list("abcdefg"), "snapshot_date": [dt.date(2024, 1, 1)] * 7,
                          "churned": [1, 0, 0, 1, None, 0, 1], "n": [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, None]})
    table = FeatureTable(frame, FeatureRegistry(()), Snapshots(), None)
    out = signal_profile(table, "n")
    # labelled rows with a value: n=0 -> 1 of 2 churned, n=1 -> 1 of 2 (the unlabelled row left out), n=2 -> 0 of 1
    assert out.to_dict(as_series=False) == {"bin": [0.0, 1.0, 2.0], "rows": [2, 2, 1], "churn_rate": [0.5, 0.5, 0.0]}
    assert signal_profile(frame.lazy(), "n").equals(out) and signal_profile(frame, "n").equals(out)


def test_signal_profile_bins_a_continuous_feature_by_quantiles():
    from trustml.features import FeatureRegistry, signal_profile
    n = 800
    frame = pl.DataFrame({"customer_id": [str(i) for i in range(n)], "snapshot_date": [dt.date(2024, 1, 1)] * n,
                          "churned": [int(i >= 600) for i in range(n)], "x": [float(i) for i in range(n)]})
    out = signal_profile(FeatureTable(frame, FeatureRegistry(()), Snapshots(), None), "x", bins=4)
    # quartiles of 0..799 at 199.75, 399.5, 599.25: 200 rows each, the last quarter all churners
    assert out["rows"].to_list() == [200, 200, 200, 200] and out["churn_rate"].to_list() == [0.0, 0.0, 0.0, 1.0]
    assert out["bin"].to_list() == ["(-inf, 199.8]", "(199.8, 399.5]", "(399.5, 599.2]", "(599.2, inf]"]
