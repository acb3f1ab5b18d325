import dataclasses
import datetime as dt
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from support import shared_data

from trustml import survival as sv
from trustml.contract import ContractError
from trustml.features import Feature, FeatureRegistry, FeatureTable, Snapshots, build_features
from trustml.privacy import pseudonymise
from trustml.simulator import simulate
from trustml.study import Study

D = [dt.date(2024, m, 1) for m in range(1, 6)]


def _table(rows, every="1mo"):
    f = pl.DataFrame(rows, schema=["customer_id", "snapshot_date"], orient="row").with_columns(churned=pl.lit(0, pl.Int8))
    return FeatureTable(f, FeatureRegistry(()), Snapshots(every=every), dt.datetime(2024, 5, 1))


def test_person_period_events_and_censoring_by_hand():
    # a: here Jan-May (censored at the last snapshot); b: Jan-Feb, gone in Mar (left in month 2 after Jan)
    t = _table([("a", d) for d in D] + [("b", D[0]), ("b", D[1])])
    pp = sv.person_period(t, 3)
    a_jan = pp.filter((pl.col("customer_id") == "a") & (pl.col("snapshot_date") == D[0]))
    assert a_jan["months_ahead"].to_list() == [1, 2, 3] and a_jan["event"].to_list() == [0, 0, 0]
    a_mar = pp.filter((pl.col("customer_id") == "a") & (pl.col("snapshot_date") == D[2]))
    assert a_mar["months_ahead"].to_list() == [1, 2]          # May is the last snapshot: month 3 is unobserved
    b_jan = pp.filter((pl.col("customer_id") == "b") & (pl.col("snapshot_date") == D[0]))
    assert b_jan["event"].to_list() == [0, 1]                 # stops at the event
    # until: nothing ending after Mar 1 is seen; b's Jan and Feb snapshots both see b leave in February
    cut = sv.person_period(t, 3, until=D[2])
    assert cut["outcome_date"].max() <= D[2] and cut.filter(pl.col("customer_id") == "b")["event"].sum() == 2
    obs = sv.observed_outcomes(t, t.frame.filter(pl.col("snapshot_date") == D[0]), 3)
    assert obs.sort("customer_id").select("time", "event").rows() == [(3, 0), (2, 1)]


def test_person_period_inactivity_uses_the_label_window():
    # inactivity churn: the event in month k is the label at the snapshot of d + (k-1) months (silent from then on);
    # a: buys on (labels 0, 0, then unknown); b: silent from Feb (label 1 at Feb); c: active only at Jan, label unknown
    rows = [("a", D[0], 0), ("a", D[1], 0), ("a", D[2], None), ("b", D[0], 0), ("b", D[1], 1), ("b", D[2], 1), ("c", D[0], None)]
    f = pl.DataFrame(rows, schema={"customer_id": pl.String, "snapshot_date": pl.Date, "churned": pl.Int8}, orient="row")
    t = FeatureTable(f, FeatureRegistry(()), Snapshots(churn="inactivity", horizon="30d"), dt.datetime(2024, 5, 1))
    pp = sv.person_period(t, 3, frame=f.filter(pl.col("snapshot_date") == D[0]))
    got = {c: pp.filter(pl.col("customer_id") == c)["event"].to_list() for c in ("a", "b", "c")}
    assert got == {"a": [0, 0], "b": [0, 1], "c": []}             # a censored when labels run out; b stops at the event
    assert pp.filter(pl.col("customer_id") == "b")["outcome_date"].to_list() == [dt.date(2024, 1, 31), dt.date(2024, 3, 2)]
    cut = sv.person_period(t, 3, frame=f.filter(pl.col("snapshot_date") == D[0]), until=dt.date(2024, 2, 15))
    assert cut["months_ahead"].to_list() == [1, 1]                 # month 2's silence window ends after the cut: unseen
    obs = sv.observed_outcomes(t, f.filter(pl.col("snapshot_date") == D[0]), 3).sort("customer_id")
    assert obs.select("time", "event").rows() == [(2, 0), (2, 1), (0, 0)]


def test_monthly_snapshots_required():
    with pytest.raises(ContractError, match="monthly snapshots"):
        sv.person_period(_table([("a", D[0])], every="2w"), 3)


@pytest.fixture(scope="module")
def sim():
    world = simulate(1500, 18, seed=4)
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    test_date, test = sv.temporal_holdout(table, 6)
    surv = sv.fit_survival(table, 6, until=test_date, seed=0)
    return world, table, test_date, test, surv


def test_curves_are_probabilities_and_deterministic(sim):
    _, table, test_date, test, surv = sim
    S = surv.survival(test)
    assert S.shape == (test.height, 6) and np.all((S > 0) & (S <= 1)) and np.all(np.diff(S, axis=1) <= 0)
    assert np.allclose(surv.churn_by(test, 3), 1 - S[:, 2])
    again = sv.fit_survival(table, 6, until=test_date, seed=0)
    assert np.array_equal(again.survival(test), S)
    assert surv.metadata["until"] == str(test_date)


def test_no_leakage_the_future_cannot_change_the_fit(sim):
    # the world as known on the test date (events before it, nothing after) gives the same features for every snapshot
    # up to it and the same hazard model as the whole world fitted with until=test date: nothing later is used
    world, table, test_date, test, surv = sim
    cut = dt.datetime.combine(test_date, dt.time())
    past = build_features(world.customers, world.events.filter(pl.col("timestamp") < cut), Snapshots(), as_of=cut)
    assert past.frame["snapshot_date"].max() == test_date
    key = ["customer_id", "snapshot_date"]
    before = table.frame.filter(pl.col("snapshot_date") <= test_date).sort(key)
    assert past.frame.sort(key).select(*key, *table.registry.names).equals(before.select(*key, *table.registry.names))
    refit = sv.fit_survival(past, 6, seed=0)
    assert refit.metadata["rounds"] == surv.metadata["rounds"]
    assert np.allclose(refit.survival(test), surv.survival(test), rtol=0, atol=1e-12)


def test_hold_out_beats_kaplan_meier_and_truth_is_better_still(sim):
    world, table, test_date, test, surv = sim
    obs = sv.observed_outcomes(table, test, 6)
    t, e = obs["time"].to_numpy(), obs["event"].to_numpy()
    pp = sv.person_period(table, 6, until=test_date)
    tr = pp.group_by("customer_id", "snapshot_date").agg(pl.col("months_ahead").max(), pl.col("event").max())
    km = np.tile(sv.kaplan_meier(tr["months_ahead"].to_numpy(), tr["event"].to_numpy(), 6), (test.height, 1))
    truth = sv.true_survival(world, test, 6)
    q = sv.survival_quality({"model": surv.survival(test), "km": km, "truth": truth}, t, e)
    ibs = dict(zip(q["model"], q["integrated_brier"], strict=True))
    ctd = dict(zip(q["model"], q["c_td"], strict=True))
    assert ibs["truth"] < ibs["model"] < ibs["km"]
    assert ctd["km"] == 0.5 and ctd["model"] > 0.55


def test_true_hazards_match_the_truth_table_and_stop_at_the_simulation(sim):
    world, table, *_ = sim
    grid = sv.true_hazard_grid(world)
    j = world.truth.select("customer_id", "month_start", "churn_prob").join(grid, on=["customer_id", "month_start"], how="left")
    assert j["churn_prob_right"].null_count() == 0 and (j["churn_prob"] - j["churn_prob_right"]).abs().max() == 0
    late = table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max()).head(5)
    assert np.isnan(sv.true_survival(world, late, 3, grid=grid)).all()   # the as-of month was never simulated


def test_true_hazards_replay_only_the_blocks_asked_for(monkeypatch):
    import trustml.simulator as simulator
    monkeypatch.setattr(simulator, "CHUNK_SIZE", 200)
    world = simulator.simulate(500, 10, 1)
    full = sv.true_hazard_grid(world)
    part = sv.true_hazard_grid(world, pl.Series(["C0000250", "C0000399"]))
    assert part.equals(full.filter(pl.col("customer_id").is_between(pl.lit("C0000201"), pl.lit("C0000400"))))
    rows = full.filter(pl.col("customer_id") == "C0000250").head(1).rename({"month_start": "snapshot_date"})
    assert np.array_equal(sv.true_survival(world, rows, 4), sv.true_survival(world, rows, 4, grid=full), equal_nan=True)


def test_pillar_attributions_sum_exactly(sim):
    _, _, _, test, surv = sim
    rows = test.head(7)
    attr = sv.pillar_survival(surv, rows, months=(1, 3, 6))
    S = surv.survival(rows)
    by = attr.group_by("customer", "months", maintain_order=True).agg(
        pl.col("log_survival").sum(), pl.col("points").sum(), pl.col("survival").first(), pl.col("base_survival").first())
    assert np.allclose(by["log_survival"], np.log(by["survival"]) - np.log(by["base_survival"]), atol=1e-9)
    assert np.allclose(by["points"], 100 * (by["survival"] - by["base_survival"]), atol=1e-9)
    ids = pseudonymise(rows["customer_id"].to_list())
    got = {(c, m): s for c, m, s in by.select("customer", "months", "survival").rows()}
    for i, c in enumerate(ids):
        assert got[(c, 6)] == pytest.approx(S[i, 5], rel=1e-9)
    assert "time" in attr["pillar"].to_list() and not any(c.startswith("C0") for c in attr["customer"].to_list())


def test_lifetime_and_clv_by_hand():
    S = np.array([[0.5, 0.25], [1.0, 1.0]])
    a = sv.CLVAssumptions(margin=0.5, annual_discount=0.0, tail=False)
    got = sv.clv(None, pl.DataFrame({"x": [1, 2]}), [100.0, 10.0], a, survival=S)
    assert got.tolist() == pytest.approx([0.5 * 100 * 1.5, 0.5 * 10 * 2.0])
    discounted = sv.clv(None, pl.DataFrame({"x": [1]}), [100.0], sv.CLVAssumptions(margin=1.0, annual_discount=0.2, tail=False), survival=S[:1])
    assert discounted[0] == pytest.approx(100 * (1 + 0.5 / 1.2 ** (1 / 12)))
    tail = sv.clv(None, pl.DataFrame({"x": [1]}), [100.0], sv.CLVAssumptions(margin=1.0, annual_discount=0.0, tail=True), survival=S[:1])
    assert tail[0] == pytest.approx(100 * (1.5 + 0.25 / 0.5))  # month-2 hazard 0.5 held: 0.25 * (1 + 0.5 + ...) more months
    assert sv.CLVAssumptions().tail                           # a lifetime by default (Study and notebook alike)
    text = "\n".join(sv.CLVAssumptions().lines(12))
    assert "margin: 60%" in text and "10% a year" in text and "next 12 months" in text


def test_clv_on_the_simulator_and_economics(sim):
    world, _, _, test, surv = sim
    price = test.join(world.customers.select("customer_id", "monthly_price"), on="customer_id", how="left", maintain_order="left")["monthly_price"]
    table = sv.clv_table(surv, test, price.to_numpy())
    assert table.height == test.height and table["clv"].is_sorted(descending=True)
    life = sv.lifetime_table(surv, test)
    assert life["expected_months"].is_between(0, 6).all() and (life["tail_months_if_constant"] >= 0).all()
    within = sv.CLVAssumptions(tail=False)
    truth_clv = sv.clv(surv, test, price.to_numpy(), within, survival=sv.true_survival(world, test, 6))
    model_clv = sv.clv(surv, test, price.to_numpy(), within)
    assert np.corrcoef(truth_clv, model_clv)[0, 1] > 0.9     # price dominates; the curve moves it
    # the lifetime (tail beyond 6 months at the month-6 hazard) is an extrapolation: looser, but still tracks the truth
    truth_life = sv.clv(surv, test, price.to_numpy(), survival=sv.true_survival(world, test, 6))
    assert np.corrcoef(truth_life, sv.clv(surv, test, price.to_numpy()))[0, 1] > 0.75


def test_lifetime_value_is_the_one_computation(sim):
    _, _, _, priced, surv = sim                                # the simulator's features carry monthly_price
    got, a = sv.lifetime_value(surv, priced)
    assert a.tail and a.value_source == "monthly_price" and "beyond it" in " ".join(a.lines(6))
    assert np.array_equal(got, sv.clv(surv, priced, priced["monthly_price"].to_numpy(), sv.CLVAssumptions()))
    within, _ = sv.lifetime_value(surv, priced, assumptions=sv.CLVAssumptions(tail=False))
    assert np.all(got > within)                                # the tail adds months beyond the horizon
    ones, b = sv.lifetime_value(surv, priced, SimpleNamespace(monthly_value=None))   # a mapping with no value column
    assert "1 per month" in b.value_source and np.allclose(ones * priced["monthly_price"].to_numpy(), got)


def test_save_load_round_trip(sim, tmp_path):
    _, _, _, test, surv = sim
    surv.save(tmp_path / "hazard")
    back = sv.SurvivalModel.load(tmp_path / "hazard")
    assert np.allclose(back.survival(test), surv.survival(test)) and back.horizon == 6


def test_metrics_by_hand():
    S = np.array([[0.9, 0.2], [0.8, 0.7], [0.95, 0.9]])
    time, event = np.array([2, 1, 2]), np.array([1, 0, 0])
    # no censoring before month 1 for anyone; the one censored at 1 drops out of month 2 (G(2) = 2/3)
    bs = sv.brier_scores(S, time, event)
    assert bs[0] == pytest.approx(np.mean([(1 - 0.9) ** 2, (1 - 0.8) ** 2, (1 - 0.95) ** 2]))
    assert bs[1] == pytest.approx(((0.2 ** 2) * 1.5 + (1 - 0.9) ** 2 * 1.5) / 3)
    assert sv.concordance_td(S, time, event) == 1.0              # the churner is below the stayer at month 2
    assert sv.concordance_td(np.full_like(S, 0.5), time, event) == 0.5
    assert sv.kaplan_meier([1, 2, 2, 3], [1, 1, 0, 0], 3).tolist() == pytest.approx([0.75, 0.5, 0.5])


def test_flat_table_tenure_as_time(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500
    risky = rng.random(n) < 0.5
    life = rng.geometric(np.where(risky, 0.12, 0.03))
    tenure = np.minimum(life, rng.integers(1, 40, n))
    churned = (life <= tenure).astype(np.int8)
    feats = (Feature("risky", "promises", "risky", "", False, (0.0, 1.0), 1, False),
             Feature("tenure", "account", "tenure", "months", False, (0.0, 72.0), -1, False))
    frame = pl.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "snapshot_date": [dt.date(2000, 1, 1)] * n,
                          "churned": churned, "risky": risky.astype(float), "tenure": tenure.astype(float)})
    table = FeatureTable(frame, FeatureRegistry(feats), Snapshots(every="flat", horizon="as labelled", churn="label"),
                         dt.datetime(2000, 1, 1))
    pp = sv.person_period(table, 12)
    assert pp.height == int(tenure.sum()) and pp["event"].sum() == churned.sum()
    surv = sv.fit_survival(table, 12)
    assert surv.features == ["risky"] and surv.time_feature == "tenure_month"
    h = surv.hazards(pl.DataFrame({"risky": [1.0, 0.0], "tenure": [5.0, 5.0]}))
    assert 0.08 < h[0].mean() < 0.16 and 0.015 < h[1].mean() < 0.05  # true hazards 0.12 and 0.03
    # time inputs: tenure month and its log, computed from the time axis alone, explained as 'time', saved and reloaded
    assert surv.time_inputs == ["tenure_month", "log_tenure_month"]
    rows = pl.DataFrame({"customer_id": ["x", "y"], "risky": [1.0, 0.0], "tenure": [5.0, 5.0]})
    attr = sv.pillar_survival(surv, rows, months=(3,))
    assert sorted(attr["pillar"].unique().to_list()) == ["promises", "time"]
    per = attr.group_by("customer").agg(pl.col("points").sum(), pl.col("survival").first(), pl.col("base_survival").first())
    assert np.allclose(per["points"], 100 * (per["survival"] - per["base_survival"]))
    assert np.array_equal(sv.SurvivalModel.load(surv.save(tmp_path / "flat")).survival(rows), surv.survival(rows))
    with pytest.raises(ContractError, match="tenure column"):
        sv.person_period(table, 12, tenure="months_here")


def test_telco_curves_conditional_on_tenure():
    path = shared_data("telco_customer_churn") / "Telco-Customer-Churn.csv"
    study = Study.load(path, "telco")
    surv = sv.fit_survival(study.table, 12, exclude=["TotalCharges"])
    rows = study.table.frame
    S_now, S_new = surv.survival(rows), surv.survival(rows, start=0)
    assert S_now.shape == S_new.shape == (rows.height, 12) and not np.allclose(S_now, S_new)
    # Telco's churn is front-loaded: 5.4% leave in their first month, 0.6% in their 25th (Kaplan-Meier);
    # the same customers' first-month hazard from tenure 0 is far above the one from tenure 24
    first, later = surv.hazards(rows, 1, start=0)[:, 0].mean(), surv.hazards(rows, 1, start=24)[:, 0].mean()
    assert first > 2 * later
    with pytest.raises(ContractError, match="not a feature"):
        sv.fit_survival(study.table, 12, exclude=["nope"])


def test_whatif_curve_plot(sim):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _, _, _, test, surv = sim
    row = test.sort("promise_broken__count_90d", descending=True).head(1)
    ax = sv.plot_whatif_curve(surv, row, {"promise_broken": 0})
    assert len(ax.get_lines()) == 2 and "promise_broken__count_90d" in ax.get_title()
    with pytest.raises(ValueError, match="one customer row"):
        sv.plot_whatif_curve(surv, test.head(2), {})
    plt.close("all")


def test_pillar_shapley_is_exact_and_agrees_in_sign_with_the_fast_scheme(sim):
    _, _, _, test, surv = sim
    rows = test.head(2)
    sh = sv.pillar_shapley(surv, rows, test, months=(2, 6), n_background=20)
    by = sh.group_by("customer", "months", maintain_order=True).agg(
        pl.col("points").sum(), pl.col("survival").first(), pl.col("base_survival").first())
    assert np.allclose(by["points"], 100 * (by["survival"] - by["base_survival"]), atol=1e-9)
    S = surv.survival(rows)
    for i, c in enumerate(pseudonymise(rows["customer_id"].to_list())):   # the full coalition is the customer
        assert by.filter((pl.col("customer") == c) & (pl.col("months") == 6))["survival"][0] == pytest.approx(S[i, 5])
    assert "time" not in sh["pillar"].to_list()
    fast = sv.pillar_survival(surv, rows, months=(6,)).filter(pl.col("pillar") != "time")
    both = sh.filter(pl.col("months") == 6).join(fast.select("customer", "pillar", pl.col("points").alias("fast")), on=["customer", "pillar"])
    big = both.filter(pl.col("points").abs() > 1.0)   # pillars moving S(6) by more than a point
    assert big.height and (np.sign(big["points"]) == np.sign(big["fast"])).mean() >= 0.75


def test_hazard_settings_are_chosen_on_held_out_data_and_recorded(sim):
    *_, surv = sim
    trials = surv.metadata["validation"]
    assert len(trials) == len(sv.HAZARD_CANDIDATES["snapshots"]) and all(t["metric"] == "log_loss" for t in trials)
    best = min(trials, key=lambda t: t["score"])
    assert surv.metadata["rounds"] >= best["rounds"] and set(surv.metadata["params"]) >= {"num_leaves", "linear_base"}


def test_save_load_keeps_a_linear_base_and_refuses_edited_files(sim, tmp_path):
    _, table, test_date, test, _ = sim
    surv = sv.fit_survival(table, 4, until=test_date, seed=1, linear_base=True)
    assert surv.model.linear_ is not None and surv.metadata["params"]["linear_base"] is True
    folder = surv.save(tmp_path / "lin")
    back = sv.SurvivalModel.load(folder)
    assert np.array_equal(back.survival(test), surv.survival(test)) and back.metadata == surv.metadata
    # the linear part is in the explanations too: pillar contributions still add up to log S - log S_base
    attr = sv.pillar_survival(back, test.head(3), months=(4,))
    by = attr.group_by("customer").agg(pl.col("log_survival").sum(), pl.col("survival").first(), pl.col("base_survival").first())
    assert np.allclose(by["log_survival"], np.log(by["survival"]) - np.log(by["base_survival"]), atol=1e-9)
    sh = sv.pillar_shapley(back, test.head(1), test, months=(4,), n_background=5)
    assert sh["survival"][0] == pytest.approx(surv.survival(test.head(1))[0, 3])
    text = (folder / "hazard.txt").read_text()
    (folder / "hazard.txt").write_text(text.replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(ContractError, match="does not match hazard.json"):
        sv.SurvivalModel.load(folder)
    with pytest.raises(ContractError, match="missing"):
        sv.SurvivalModel.load(tmp_path / "nothing")


def test_survival_table_columns_and_clv(sim):
    _, _, _, test, surv = sim
    rows = test.head(5)
    t = sv.survival_table(surv, rows, 20.0, sv.CLVAssumptions(margin=0.5, annual_discount=0.0, tail=False))
    S = surv.survival(rows)
    assert t["customer"].to_list() == pseudonymise(rows["customer_id"].to_list())
    assert np.allclose(t.select([f"survival_{k}m" for k in range(1, 7)]).to_numpy(), S)
    assert np.allclose(t["churn_by_3m"], 1 - S[:, 2]) and "churn_by_12m" not in t.columns     # beyond the 6-month horizon
    assert np.allclose(t["clv"], 0.5 * 20 * (1 + S[:, :-1].sum(axis=1)))


def test_cli_survival_writes_whole_and_refuses_bad_input(tmp_path, capsys):
    from trustml.cli import main
    out = tmp_path / "surv"
    main(["survival", "--customers", "600", "--months", "12", "--horizon", "3", "--margin", "0.5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "margin: 50%" in printed and "discount rate: 10% a year" in printed and "monthly_price" in printed
    table = pl.read_parquet(out / "survival.parquet")
    assert {"customer", "survival_1m", "survival_3m", "expected_months", "churn_by_3m", "clv"} <= set(table.columns)
    assert table["customer"].str.starts_with("cust-").all() and (table["clv"] > 0).all()
    assert pl.read_csv(out / "survival.csv").height == table.height
    assert sv.SurvivalModel.load(out / "model").horizon == 3
    for argv, what in ((["--margin", "1.5"], "--margin"), (["--horizon", "0"], "--horizon"), (["--data", "x.csv"], "--mapping"),
                       ([], "exists and is not empty")):
        with pytest.raises(SystemExit) as e:
            main(["survival", "--customers", "300", "--months", "12", "--out", str(out), *argv])
        assert e.value.code == 2 and what in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model", "survival.csv", "survival.parquet"]


def test_scoring_in_slices_equals_scoring_at_once(sim, monkeypatch):
    _, _, _, test, surv = sim
    whole = surv.log_odds(test)
    monkeypatch.setattr(sv, "SCORE_CHUNK_ROWS", 7)   # many slices, the last one short
    assert test.height % 7 and np.array_equal(surv.log_odds(test), whole)


def test_a_large_frame_scored_again_is_not_scored_twice(sim, monkeypatch):
    """Curves, lifetimes and CLV of every customer score the same frame: beyond one slice it is scored once."""
    _, _, _, test, surv = sim
    surv = dataclasses.replace(surv)   # a model of its own: nothing kept from other tests
    monkeypatch.setattr(sv, "SCORE_CHUNK_ROWS", 7)
    calls = []
    real = surv.model.decision_function
    monkeypatch.setattr(surv.model, "decision_function", lambda X: calls.append(len(X)) or real(X))
    first = surv.survival(test)
    n = len(calls)
    first[:] = -1                                                     # a caller's changes never reach the next one
    again = surv.survival(test)
    assert sv.lifetime_table(surv, test)["expected_months"].len() == test.height and len(calls) == n
    assert np.array_equal(again, np.cumprod(1 - sv.expit(surv.log_odds(test.clone())), axis=1))   # another frame: scored
    assert len(calls) == 2 * n
    surv.survival(test, 3)                                            # another question: scored anew
    assert len(calls) > 2 * n
