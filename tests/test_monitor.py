import numpy as np
import polars as pl
import pytest

from trustml import monitor
from trustml.contract import ContractError
from trustml.features import Feature, FeatureRegistry, FeatureTable
from trustml.mapping import Mapping
from trustml.model import ModelMismatchError, temporal_split, train
from trustml.monitor import Reference, Thresholds, _numeric_bins, check_contract, drift, fairness, features_for, groups_of, next_month, proxies, psi, score
from trustml.simulator import SimConfig

# more, and mostly unannounced, price rises from month 9: a policy change the transparency pillar should show
CHANGE = SimConfig(changes=((9, "price_rise_month_share", 0.2), (9, "price_rise_unannounced_share", 1.0)))


def _fit(table):
    return train(table, trials=0, n_estimators=60, early_stopping=False)


@pytest.fixture(scope="module")
def stable():
    return next_month(1500, 14, seed=4, train_months=9, score_month=12)


@pytest.fixture(scope="module")
def changed():
    return next_month(1500, 14, seed=4, train_months=9, score_month=12, config=CHANGE)


@pytest.fixture(scope="module")
def fitted(stable):
    trained, split = _fit(stable.history)
    test = split.frames(stable.history.labelled())[2]
    return trained, Reference.fit(trained, stable.reference_rows, labelled=test), test


# --- PSI ---------------------------------------------------------------------------------------

def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    e = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(e, e) == 0.0
    small, large = psi(e, [0.3, 0.25, 0.25, 0.2]), psi(e, [0.55, 0.25, 0.15, 0.05])
    assert 0 < small < 0.1 < 0.25 < large
    assert np.isfinite(psi(e, [1.0, 0, 0, 0]))  # an emptied bin counts, finitely


def test_a_point_mass_gets_its_own_bin():
    # 90% zeros: quantile edges collapse to 0, yet values above it must be told apart from it
    x = np.r_[np.zeros(900), np.arange(1, 101, dtype=float)]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)[1:-1]))
    idx = _numeric_bins(x, edges)
    assert len(np.unique(idx[:900])) == 1 and not set(idx[:900]) & set(idx[900:])
    assert (_numeric_bins(np.array([np.nan]), edges) == 2 * len(edges) + 1).all()   # missing: the last bin


def test_thresholds_are_the_users_and_checked():
    assert Thresholds().psi_status(0.05) == "ok" and Thresholds().psi_status(0.15) == "warn" and Thresholds().psi_status(0.3) == "alarm"
    assert Thresholds(psi_warn=0.01, psi_alarm=0.02).psi_status(0.05) == "alarm"
    with pytest.raises(ValueError, match="psi_warn <= psi_alarm"):
        Thresholds(psi_warn=0.3, psi_alarm=0.2)


# --- drift -------------------------------------------------------------------------------------

def test_the_reference_rows_do_not_drift_from_themselves(stable, fitted):
    trained, ref, _ = fitted
    rep = drift(ref, stable.reference_rows, trained)
    assert rep.status == "ok" and rep.alarms == []
    assert rep.pillars["psi"].max() == 0.0 and rep.risk["psi"] == 0.0


def test_reference_round_trips_through_json_beside_the_model(tmp_path, stable, fitted):
    trained, ref, _ = fitted
    trained.save(tmp_path)
    ref.save(tmp_path)
    back = Reference.load(tmp_path)
    a, b = drift(ref, stable.new.frame, trained), drift(back, stable.new.frame, trained)
    assert a.features.equals(b.features) and a.pillars.equals(b.pillars) and a.risk == b.risk
    assert not list(tmp_path.glob("*.pkl"))


def test_a_clear_shift_in_one_pillar_is_flagged_there_only(stable, fitted):
    trained, ref, _ = fitted
    new = stable.reference_rows.with_columns(pl.col("price_change_unannounced__count_365d") + 2,
                                             pl.col("price_change_unannounced__decayed_365d_hl60") + 1.5)
    rep = drift(ref, new, trained)
    by = dict(zip(rep.pillars["pillar"], rep.pillars["status"], strict=True))
    assert by["transparency"] == "alarm"
    assert all(s == "ok" for p, s in by.items() if p != "transparency")
    row = rep.pillars.filter(pl.col("pillar") == "transparency").row(0, named=True)
    assert row["top_feature"].startswith("price_change_unannounced") and row["features_warn"] == 2
    assert any("Transparency" in a for a in rep.alarms)
    # a pillar summed over its features is at least its largest feature
    summed = drift(ref, new, trained, pillar_agg="sum").pillars
    assert (summed["psi"] >= rep.pillars["psi"] - 1e-12).all()


def test_more_unannounced_price_rises_from_a_month_on_are_detected_in_transparency(stable, changed, fitted):
    trained, ref, _ = fitted
    # the change starts at the cut: both worlds share their truth before it (timestamps within a month may differ)
    truth = lambda nm: nm.world.truth.filter(pl.col("month_start") < nm.cut)  # noqa: E731
    assert truth(stable).equals(truth(changed))
    before = drift(ref, stable.new.frame, trained).pillars
    trained_c, _ = _fit(changed.history)   # the changed world's own model and reference, as its analyst would have
    after = drift(Reference.fit(trained_c, changed.reference_rows), changed.new.frame, trained_c).pillars
    t_before = before.filter(pl.col("pillar") == "transparency").row(0, named=True)
    t_after = after.filter(pl.col("pillar") == "transparency").row(0, named=True)
    assert t_before["status"] == "ok"
    assert t_after["status"] in ("warn", "alarm") and t_after["psi"] > 3 * t_before["psi"]


def test_realised_churn_and_auc_are_compared_once_labels_arrive(stable, fitted):
    trained, ref, test = fitted
    rep = drift(ref, stable.new.frame, trained)
    assert stable.new.frame["churned"].null_count() == 0
    assert set(rep.performance["metric"]) == {"churn rate", "roc_auc"}
    unlabelled = stable.new.frame.with_columns(churned=pl.lit(None, dtype=pl.Int8))
    assert drift(ref, unlabelled, trained).performance.is_empty()
    # labels that no longer follow the risk: the AUC falls to chance and is flagged
    rng = np.random.default_rng(0)
    big = pl.concat([test] * 4)
    shuffled = big.with_columns(churned=pl.Series(rng.permutation(big["churned"].to_numpy())))
    perf = drift(ref, shuffled, trained).performance.filter(pl.col("metric") == "roc_auc").row(0, named=True)
    assert perf["realised"] < 0.56 and perf["status"] == "alarm"
    # twice as many churners: the churn rate is flagged
    doubled = big.with_columns(churned=pl.when(pl.Series(rng.random(big.height) < big["churned"].mean())).then(1).otherwise(pl.col("churned")))
    perf = drift(ref, doubled, trained).performance.filter(pl.col("metric") == "churn rate").row(0, named=True)
    assert perf["realised"] > 1.6 * perf["reference"] and perf["status"] == "alarm"


def test_reference_takes_its_baseline_from_a_model_card(stable, fitted):
    trained = fitted[0]
    card = {"metrics": [{"model": "lightgbm (calibrated)", "roc_auc": 0.9, "base_rate": 0.02}]}
    ref = Reference.fit(trained, stable.reference_rows, card=card)
    assert (ref.auc, ref.churn_rate) == (0.9, 0.02) and "model card" in ref.note


# --- contract and scoring ----------------------------------------------------------------------

def _with(table, frame=None, registry=None, dropped=None):
    return FeatureTable(table.frame if frame is None else frame, registry or table.registry, table.snapshots, table.as_of,
                        table.dropped if dropped is None else dropped)


def test_new_data_with_the_same_features_passes_and_different_ones_are_named(stable, fitted):
    trained = fitted[0]
    assert check_contract(trained, stable.new) == []
    reg = stable.new.registry
    fewer = FeatureRegistry(tuple(f for f in reg if f.name != "surprise_fee__count_180d"))
    with pytest.raises(ModelMismatchError, match=r"missing 1: surprise_fee__count_180d \(no 'surprise_fee' events in the data\)"):
        check_contract(trained, _with(stable.new, registry=fewer, dropped={"surprise_fee__count_180d": "no 'surprise_fee' events in the data"}))
    moved = FeatureRegistry(tuple(Feature(**{**vars(f), "pillar": "other"}) if f.name == "plan" else f for f in reg))
    extra = FeatureRegistry((*reg.features, Feature("shoe_size", "other", "", "", False, None, 0, False)))
    with pytest.raises(ModelMismatchError, match=r"plan \(pillar 'account' -> 'other'\)"):
        check_contract(trained, _with(stable.new, registry=moved))
    with pytest.raises(ModelMismatchError, match="not in training 1: shoe_size"):
        check_contract(trained, _with(stable.new, registry=extra))
    new_plan = stable.new.frame.with_columns(plan=pl.lit("platinum"))
    notes = check_contract(trained, _with(stable.new, frame=new_plan))
    assert notes and "platinum" in notes[0]


def test_score_writes_risk_reasons_and_actions_with_pseudonyms(stable, fitted):
    trained = fitted[0]
    frame = stable.new.frame.head(60)
    out = score(trained, frame, actions_top=4)
    assert out.height == 60 and out["customer"].str.starts_with("cust-").all()
    assert out["risk"].is_sorted(descending=True) and out["rank"].to_list() == list(range(1, 61))
    assert not set(out["customer"]) & set(frame["customer_id"])
    assert out["reason_1"].null_count() < 60 and out["reason_1"].drop_nulls().str.contains("points of churn risk").all()
    searched = out.filter(~pl.col("best_action").str.starts_with("not searched"))
    assert searched.height == 4 and searched["rank"].to_list() == [1, 2, 3, 4]
    real = score(trained, frame, actions_top=0, real_ids=True)
    assert real.columns[0] == "real_customer_id" and set(real["real_customer_id"]) == set(frame["customer_id"])
    assert np.allclose(real["risk"].to_numpy(), out["risk"].to_numpy())


def test_a_flat_file_through_its_mapping_scores_without_the_churn_column(tmp_path):
    m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": ["yes"], "negative": ["no"]},
                           "pillars": {"promises": ["contract"]}, "sensitive": ["gender"]})
    rng = np.random.default_rng(1)
    n = 400
    df = pl.DataFrame({"id": [f"c{i}" for i in range(n)], "contract": rng.choice(["monthly", "yearly"], n).tolist(),
                       "spend": rng.gamma(2, 10, n), "gender": rng.choice(["f", "m"], n).tolist()})
    df = df.with_columns(left=pl.when((pl.col("contract") == "monthly") & pl.Series(rng.random(n) < 0.5)).then(pl.lit("yes")).otherwise(pl.lit("no")))
    df.write_csv(tmp_path / "train.csv")
    table = features_for(tmp_path / "train.csv", m)
    trained, _ = _fit(table)
    df.drop("left").write_csv(tmp_path / "next.csv")
    new = features_for(tmp_path / "next.csv", m)
    assert new.frame["churned"].null_count() == n and "gender" not in new.frame.columns
    assert check_contract(trained, new) == []
    assert score(trained, new.frame, actions_top=2).height == n
    # a column whose type changed (numbers -> text) is refused, naming it
    df.drop("left").with_columns(spend=pl.lit("n/a")).write_csv(tmp_path / "bad.csv")
    with pytest.raises(ModelMismatchError, match="spend"):
        check_contract(trained, features_for(tmp_path / "bad.csv", m))
    # fairness and proxies read the sensitive column from the raw file, by id
    g = groups_of(df, m)
    assert g.columns == ["customer_id", "gender"]
    assert set(fairness(trained, table.frame, g).groups["group"]) == {"f", "m"}
    assert proxies(trained, table.frame, g, "gender").auc_all < 0.65   # gender was drawn independently of every feature


def test_scoring_a_simulated_world_folder(tmp_path, fitted):
    from trustml.simulator import simulate, write_world
    w = simulate(600, 12, seed=9)
    write_world(w, tmp_path / "w")
    table = features_for(tmp_path / "w")
    assert table.frame["snapshot_date"].n_unique() == 1 and str(table.frame["snapshot_date"][0]) == str(w.as_of.date())
    assert check_contract(fitted[0], table) == []


# --- fairness and proxies ----------------------------------------------------------------------

def test_fairness_per_group_adds_up(stable, fitted):
    trained, _, test = fitted
    g = groups_of(stable.world.customers, columns=["channel", "plan"])
    fair = fairness(trained, test, g, top_share=0.1)
    k = int(round(0.1 * test.height))
    for col in ("channel", "plan"):
        part = fair.groups.filter(pl.col("column") == col)
        assert part["customers"].sum() == test.height and part["selected"].sum() == k
    ch = fair.groups.filter(pl.col("column") == "channel")
    churned = test.join(g, on="customer_id").group_by("channel").agg(pl.col("churned").mean())
    assert np.allclose(ch.sort("group")["churn_rate"].to_numpy(), churned.sort("channel")["churned"].to_numpy())
    assert {"fpr", "fnr", "calibration_ratio"} <= set(fair.groups.columns)
    assert set(fair.gaps["column"]) == {"channel", "plan"} and "selection-rate ratio" in fair.summary()
    mask = np.zeros(test.height, dtype=bool)
    fair = fairness(trained, test, g, selected=mask)
    assert (fair.groups["selection_rate"] == 0).all()
    with pytest.raises(ValueError, match="one boolean per row"):
        fairness(trained, test, g, selected=mask[:3])
    with pytest.raises(ContractError, match="no customer of the scored rows"):
        fairness(trained, test, g.with_columns(customer_id=pl.lit("nobody")))


def test_proxies_find_the_feature_that_encodes_a_segment(stable, fitted):
    trained, _, test = fitted
    g = groups_of(stable.world.customers, columns=["plan", "channel"])
    px = proxies(trained, test, g, "plan")
    assert px.features["feature"][0] == "plan" and px.features["auc_alone"][0] > 0.99 and px.auc_all > 0.95
    rng = np.random.default_rng(0)
    noise = g.with_columns(coin=pl.Series(rng.choice(["a", "b"], g.height)))
    px = proxies(trained, test, noise, "coin")
    assert 0.4 < px.auc_all < 0.6 and px.features["auc_alone"].max() < 0.6
    assert "AUC" in px.summary()


def test_groups_of_names_missing_columns():
    with pytest.raises(ContractError, match="religion"):
        groups_of(pl.DataFrame({"customer_id": ["a"]}), columns=["religion"])


# --- next month at any world length, in a world of its own ------------------------------------

@pytest.mark.parametrize("n_months", [12, 24])
def test_next_month_splits_its_history_to_fit_the_world_and_trains_on_it(n_months):
    nm = next_month(1200, n_months, seed=2, train_months=-6, score_month=-3, changes=((-6, "price_rise_unannounced_share", 0.9),))
    dates = tuple(sorted(nm.history.labelled()["snapshot_date"].unique().to_list()))
    split = nm.split
    assert split.train + split.calibrate + split.test == dates       # a one-month label: no gap, every month used once, in order
    assert len(split.train) >= len(dates) / 2
    if n_months == 24:
        assert split == temporal_split(nm.history) and "short" not in nm.split_note   # long enough: the default split
    else:
        with pytest.raises(ValueError, match="labelled snapshot dates"):
            temporal_split(nm.history)                                # 5 labelled months: the default does not fit
        assert (len(split.train), len(split.calibrate), len(split.test)) == (3, 1, 1)
        assert "train on 3, calibrate on 1, test on 1 (a short history" in nm.split_note
    trained, used = train(nm.history, split, trials=0, n_estimators=60, early_stopping=False)
    assert used == split and trained.metadata["trained_on"]["test_snapshots"] == [str(d) for d in split.test]
    ref = Reference.fit(trained, nm.reference_rows, labelled=split.frames(nm.history.labelled())[2])
    assert set(drift(ref, nm.new.frame, trained).performance["metric"]) == {"churn rate", "roc_auc"}


def test_a_history_too_short_to_split_says_so():
    nm = next_month(600, 12, seed=2, train_months=4, score_month=8)
    with pytest.raises(ValueError, match="train on more months"):
        monitor.history_split(nm.history)


def test_the_next_month_world_is_capped_whatever_the_study_size(monkeypatch):
    monkeypatch.setattr(monitor, "OWN_WORLD_CUSTOMERS", 400)
    capped = next_month(10**6, 12, seed=2, train_months=-6, score_month=-3, max_customers=monitor.OWN_WORLD_CUSTOMERS)
    small = next_month(400, 12, seed=2, train_months=-6, score_month=-3)
    assert capped.world.customers.height == 400
    assert capped.history.frame.equals(small.history.frame) and capped.new.frame.equals(small.new.frame)
    assert next_month(300, 12, seed=2, train_months=-6, score_month=-3, max_customers=400).world.customers.height == 300


# --- command line ------------------------------------------------------------------------------

def test_score_from_the_command_line(tmp_path, capsys, stable, fitted):
    from trustml.cli import main
    from trustml.simulator import write_world
    trained, ref, _ = fitted
    trained.save(tmp_path / "model")
    ref.save(tmp_path / "model")
    write_world(stable.world, tmp_path / "w")
    main(["score", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "w"), "--out", str(tmp_path / "s.csv"), "--top", "3"])
    out = capsys.readouterr().out
    assert "pseudonymised ids" in out and "Drift on" in out
    s = pl.read_csv(tmp_path / "s.csv")
    assert s.columns[0] == "customer" and s["customer"].str.starts_with("cust-").all()
    main(["score", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "w"), "--out", str(tmp_path / "r.parquet"), "--real-ids", "--top", "1"])
    assert "REAL customer ids" in capsys.readouterr().out
    main(["score", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "w"), "--out", str(tmp_path / "t.csv"), "--top", "0",
          "--psi-warn", "0", "--psi-alarm", "0"])
    assert ": ALARM" in capsys.readouterr().out   # the user's thresholds: at zero, any movement is an alarm
    assert pl.read_parquet(tmp_path / "r.parquet").columns[0] == "real_customer_id"
    # data with other features than the model's: one clear message naming them, nothing written
    flat = tmp_path / "flat.csv"
    pl.DataFrame({"id": ["a", "b", "c", "d"], "x": [1.0, 2.0, 3.0, 4.0]}).write_csv(flat)
    (tmp_path / "m.toml").write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "left"\n')
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", str(tmp_path / "model"), "--data", str(flat), "--mapping", str(tmp_path / "m.toml"), "--out", str(tmp_path / "x.csv")])
    assert "features differ" in capsys.readouterr().err + str(e.value.code)
    assert not (tmp_path / "x.csv").exists()

