"""Study: each stage computed once, kept as artifacts (no pickle), read back identical; flat tables act on every
customer with an out-of-fold risk."""

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from trustml.model import OFFSET
from trustml.study import _STAGES, Study, _Later, _read_value, _write_value


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    study = Study.load(n_customers=1200, n_months=14, seed=2, trials=0)
    study.compute(["comparison", "calibration", "folds", "explanation", "pillars", "latest", "economics", "truth",
                   "whatif_truth", "survival_truth"])
    folder = study.save(tmp_path_factory.mktemp("artifacts"))
    return study, folder


def test_every_computed_stage_is_written_and_read_back_identical_without_recomputing(computed, monkeypatch):
    study, folder = computed
    opened = Study.open(folder)
    import trustml.evaluate
    import trustml.explanations
    # a stage read from the artifacts never calls the code that computes it
    for mod, name in [(trustml.evaluate, "compare_models"), (trustml.evaluate, "held_out_folds"),
                      (trustml.explanations, "explain"), (trustml.explanations, "truthfulness")]:
        monkeypatch.setattr(mod, name, lambda *a, **k: pytest.fail("recomputed a stage kept in the artifacts"))
    for name in ["comparison", "calibration", "folds", "pillars", "latest"]:
        assert getattr(opened, name).equals(getattr(study, name)), name
    assert np.array_equal(opened.explanation.values, study.explanation.values)
    assert np.array_equal(opened.explanation.base_values, study.explanation.base_values)
    assert np.array_equal(opened.clv, study.clv)
    assert opened.truth["spearman"] == study.truth["spearman"] and opened.truth["levers"].equals(study.truth["levers"])
    assert opened.whatif_truth["by_lever"].equals(study.whatif_truth["by_lever"])
    assert opened.survival_truth["quality"].equals(study.survival_truth["quality"])
    assert np.array_equal(opened.survival.survival(study.latest), study.survival.survival(study.latest))
    assert opened.model_card()["metrics"] == study.model_card()["metrics"]
    written = {p.name for p in (folder / "stages").iterdir()}
    assert written <= set(_STAGES) and {"comparison", "explanation", "survival", "truth"} <= written
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))


def test_a_stage_missing_from_the_artifacts_is_computed_on_use(computed):
    study, folder = computed
    opened = Study.open(folder)
    assert "causal_truth" not in {p.name for p in (folder / "stages").iterdir()}
    assert opened.economics.best == study.economics.best   # computed from stages that were read


@pytest.mark.parametrize("value", [
    {"a": pl.DataFrame({"x": [1, 2]}), "b": [1.5, None, "s"], 3: (np.arange(6).reshape(2, 3), np.float64(0.25))},
    pl.DataFrame({"d": [None, 1.0]}), [], {"nested": {"deeper": [pl.Series("s", ["a", "b"])]}},
])
def test_values_round_trip(tmp_path, value):
    _write_value(value, tmp_path / "v")
    back = _read_value(tmp_path / "v")

    def same(a, b):
        if isinstance(a, pl.DataFrame | pl.Series):
            return a.equals(b)
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list | tuple):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return a == b
    assert same(value, back)


def test_a_value_with_no_artifact_format_is_refused(tmp_path):
    with pytest.raises(TypeError, match="no artifact format"):
        _write_value({"f": object()}, tmp_path / "v")


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A flat table where the label depends on two columns: in-sample risks of training customers are too sure."""
    rng = np.random.default_rng(5)
    n = 3000
    tickets, tenure = rng.poisson(2, n), rng.integers(1, 72, n)
    p = 1 / (1 + np.exp(-(-1.2 + 0.45 * tickets - 0.04 * tenure)))
    df = pl.DataFrame({"account": [f"A{i:05d}" for i in range(n)], "tickets": tickets, "tenure": tenure,
                       "noise": rng.normal(size=n), "left": np.where(rng.random(n) < p, "Yes", "No")})
    folder = tmp_path_factory.mktemp("flat")
    df.write_csv(folder / "flat.csv")
    (folder / "m.toml").write_text('kind = "flat"\n[columns]\nid = "account"\ntarget = "left"\npositive = ["Yes"]\n'
                                   'tenure = "tenure"\n')
    return Study.load(folder / "flat.csv", folder / "m.toml", trials=0), df


def test_a_flat_table_acts_on_every_stayer_with_an_out_of_fold_risk(flat):
    study, df = flat
    latest = study.latest
    assert latest.height == int((df["left"] == "No").sum())        # every current customer, not a 20% test part
    assert latest["churned"].sum() == 0 and OFFSET in latest.columns
    part = study.split.parts(study.table.labelled())
    test_ids = set(study.table.labelled().filter(pl.Series(part == 2))["customer_id"])
    in_test = latest["customer_id"].is_in(list(test_ids)).to_numpy()
    assert in_test.sum() > 0 and (~in_test).sum() > 0
    assert np.all(latest[OFFSET].to_numpy()[in_test] == 0)          # held out already: the model's own risk
    assert np.any(latest[OFFSET].to_numpy()[~in_test] != 0)


def test_out_of_fold_risks_rank_training_customers_as_honestly_as_the_test_part(flat):
    """In-sample risks separate a training customer's own label too well; out-of-fold risks do not."""
    study, _ = flat
    from trustml.model import out_of_fold
    lab = study.table.labelled()
    part = study.split.parts(lab)
    train_rows = lab.filter(pl.Series(part == 0))
    everyone = out_of_fold(study.table, study.trained, study.split, stayers_only=False)
    train_oof = everyone.filter(pl.Series(part == 0))
    y = train_rows["churned"].to_numpy()
    in_sample = roc_auc_score(y, study.trained.predict_risk(train_rows))
    oof = roc_auc_score(y, study.trained.predict_risk(train_oof))
    held_out = roc_auc_score(study.test["churned"].to_numpy(), study.trained.predict_risk(study.test))
    assert in_sample > held_out + 0.02
    assert abs(oof - held_out) < 0.03 and oof < in_sample - 0.02


def test_every_risk_and_what_if_starts_from_the_out_of_fold_risk(flat):
    study, _ = flat
    from trustml.model import _logit
    row = study.latest.filter(pl.col(OFFSET) != 0).head(1)
    base = study.trained.model.decision_function(row.select(study.registry.names))
    assert study.trained.log_odds(row) == pytest.approx(base + row[OFFSET].to_numpy())
    assert _logit(study.trained.predict_risk(row, calibrated=False)) == pytest.approx(base + row[OFFSET].to_numpy())
    from trustml.whatif import campaign
    plan = campaign(study.trained, study.latest, study.value(study.latest), top_n=5)
    top = np.sort(study.trained.predict_risk(study.latest))[::-1][:5]
    assert plan["risk"].to_numpy() == pytest.approx(top, abs=1e-3)


def test_two_jobs_compute_the_same_analysis_as_one(monkeypatch):
    import threading

    from trustml import survival
    threads, versus_truth = [], survival.versus_truth
    monkeypatch.setattr(survival, "versus_truth", lambda *a, **k: threads.append(threading.current_thread().name) or versus_truth(*a, **k))
    names = ["comparison", "explanation", "latest_risk", "economics", "truth", "whatif_truth", "causal_effects", "causal_truth",
             "causal_ablation", "survival_truth"]
    one = Study.load(n_customers=900, n_months=12, seed=3, trials=2).compute(names)
    two = Study.load(n_customers=900, n_months=12, seed=3, trials=2).compute(names, jobs=2)
    assert threads[0] == threading.main_thread().name and threads[1] == "trustml-beside-the-model"
    assert two.comparison.equals(one.comparison)
    assert np.array_equal(two.explanation.values, one.explanation.values)
    assert np.array_equal(two.latest_risk, one.latest_risk) and np.array_equal(two.clv, one.clv)
    assert two.truth["levers"].equals(one.truth["levers"]) and two.whatif_truth["by_lever"].equals(one.whatif_truth["by_lever"])
    assert list(two.causal_effects) == list(one.causal_effects)
    for lever, effect in one.causal_effects.items():   # polars' parallel sums leave ~1e-17 between any two runs
        assert np.allclose(two.causal_effects[lever].theta, effect.theta, rtol=0, atol=1e-12), lever
    assert two.causal_truth.equals(one.causal_truth)
    assert list(two.causal_ablation) == list(one.causal_ablation) == ["respect_for_time"]
    assert np.allclose(two.causal_ablation["respect_for_time"].theta, one.causal_ablation["respect_for_time"].theta, rtol=0, atol=1e-12)
    for part in ("quality", "top_decile", "clv"):   # in the second thread too (the world is in memory)
        assert two.survival_truth[part].equals(one.survival_truth[part]), part
    assert "lever_truth" not in two.__dict__   # let go once the truth stages are done


def test_the_ablation_is_each_named_lever_without_revealed_traits_on_the_causal_rows(tmp_path, monkeypatch):
    from trustml import causal
    from trustml.study import CAUSAL_ABLATION_LEVERS
    study = Study.load(n_customers=700, n_months=14, seed=1, trials=0)
    ablation = study.causal_ablation
    assert list(ablation) == list(CAUSAL_ABLATION_LEVERS)
    rows = study.causal_rows
    for lever, effect in ablation.items():
        assert not [c for c in effect.controls if "__revealed_" in c], lever
        direct = causal.lever_effect(rows, study.events_of(rows), study.registry, lever, seed=1, traits=False)
        assert np.array_equal(effect.theta, direct.theta) and effect.per_row.equals(direct.per_row), lever
        with_traits = causal.lever_effect(rows, study.events_of(rows), study.registry, lever, seed=1)
        assert [c for c in with_traits.controls if "__revealed_" in c] and not np.array_equal(with_traits.theta, effect.theta)
    folder = study.save(tmp_path / "artifacts")
    monkeypatch.setattr(causal, "lever_effects", lambda *a, **k: pytest.fail("recomputed the ablation kept in the artifacts"))
    opened = Study.open(folder).causal_ablation
    assert {k: v.ate for k, v in opened.items()} == {k: v.ate for k, v in ablation.items()}


def test_a_computed_study_is_freed_when_let_go():
    """Libraries imported inside a stage once kept the Study alive through a stored ImportError's frames (the report's
    process held 12 GB of analysis at 1M customers while its notebooks ran). A fresh interpreter: nothing imported yet."""
    import subprocess
    import sys
    code = ("import gc, weakref\nfrom trustml.study import Study\n"
            "s = Study.load(n_customers=900, n_months=12, seed=3, trials=2).compute(['comparison', 'causal_effects', 'survival'], jobs=2)\n"
            "ref = weakref.ref(s)\ndel s\ngc.collect()\nprint('freed' if ref() is None else 'kept')")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "freed"


def test_truth_checks_beyond_the_cap_cover_the_leading_customers_only(monkeypatch):
    import trustml.simulator as sim
    import trustml.study as st
    monkeypatch.setattr(sim, "CHUNK_SIZE", 300)
    monkeypatch.setattr(st, "TRUTH_MAX_CUSTOMERS", 600)
    study = Study.load(n_customers=900, n_months=14, seed=3, trials=0)
    assert study.truth_customers == 600
    lead = sim.leading_customers(600)
    truth = study.lever_truth
    assert truth["customer_id"].n_unique() == study.world.truth.filter(lead)["customer_id"].n_unique() < \
        study.world.truth["customer_id"].n_unique()                                      # no simulation beyond the cap
    from trustml.explanations import LEVERS
    full = sim.true_effects(900, 14, 3, {p: sim.Policy(**v) for p, v in LEVERS.items()})
    assert truth.equals(full.filter(lead))                                                 # the same truth as a full run
    assert study.causal_rows["customer_id"].is_in(truth["customer_id"].unique()).all()
    assert study.causal_rows["customer_id"].n_unique() < study.table.labelled()["customer_id"].n_unique()
    assert study.truth["levers"].height > 0 and study.whatif_truth["by_lever"].height > 0
    assert study.survival_truth["quality"].height > 0


def test_an_opened_study_reads_the_world_and_events_only_when_asked(computed):
    study, folder = computed
    opened = Study.open(folder)
    assert opened.is_simulated and opened.has_events
    _ = opened.pillars, opened.comparison, opened.latest
    unread = lambda: not {"customers", "events", "truth"} & set(vars(opened.world))  # noqa: E731
    assert unread() and isinstance(opened.__dict__["_events"], _Later)     # not read for stages
    customers, events = opened.scan_world()
    assert customers.collect().equals(study.world.customers) and events.collect().equals(study.events)
    assert opened.scan_events().collect().equals(study.events) and unread()   # scans
    rows = study.test.head(50)
    assert opened.events_of(rows).equals(study.events.filter(pl.col("customer_id").is_in(rows["customer_id"].implode()))) and unread()
    assert opened.events.equals(study.events) and opened.world.truth.equals(study.world.truth)
    assert opened.events is opened.world.events                                     # read once


def test_an_opened_study_reads_the_feature_rows_only_when_asked(computed, monkeypatch):
    study, folder = computed
    opened = Study.open(folder)
    import trustml.features
    read = trustml.features.FeatureTable.read
    monkeypatch.setattr(trustml.features.FeatureTable, "read", lambda *a, **k: pytest.fail("read every feature row"))
    # what the notebooks show: the test rows (a filtered scan), the registry, the summary and the model card
    assert opened.test.equals(study.test) and opened.registry.to_dict() == study.registry.to_dict()
    assert opened.churn_rate == study.churn_rate and opened.feature_rows == study.table.frame.height
    card = lambda s: json.dumps(s.model_card(), default=str, sort_keys=True)  # noqa: E731  (NaN == NaN as text)
    assert opened.summary() == study.summary() and card(opened) == card(study)
    assert opened.scan_features().collect().equals(study.table.frame) and opened.feature_settings.frame.height == 0
    from trustml.features import signal_profile
    assert signal_profile(opened.scan_features(), "usage__count_30d").equals(signal_profile(study.table, "usage__count_30d"))
    assert opened.split == study.split and "_table" in opened.__dict__ and not hasattr(opened.__dict__["_table"], "frame")
    monkeypatch.setattr(trustml.features.FeatureTable, "read", read)
    assert opened.table.frame.equals(study.table.frame)                        # and whole when asked


def test_features_beyond_the_partition_size_are_built_in_parts_and_equal(monkeypatch):
    from polars.testing import assert_frame_equal

    import trustml.study as st
    from trustml.features import Snapshots
    from trustml.simulator import simulate
    w = simulate(700, 10, 4)
    whole = st._features(w.customers, w.events, Snapshots(), None, w.as_of, None)
    monkeypatch.setattr(st, "FEATURE_PART_CUSTOMERS", 200)
    import trustml.distributed as dist
    calls = []
    real = dist.features_in_parts
    monkeypatch.setattr(dist, "features_in_parts", lambda *a, **k: calls.append(k["parts"]) or real(*a, **k))
    parted = st._features(w.customers, w.events, Snapshots(), None, w.as_of, None)   # a user's tables beyond the size
    assert calls == [4] and parted.registry.names == whole.registry.names
    assert_frame_equal(parted.frame, whole.frame, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_a_large_simulated_world_stays_on_disk_and_answers_as_in_memory(monkeypatch):
    """Beyond the partition size the world is simulated to a private folder block by block, its features built a
    block at a time; stages read scans of it. Everything equals the in-memory study of the same world."""
    import gc

    import trustml.simulator as sim
    import trustml.study as st
    monkeypatch.setattr(sim, "CHUNK_SIZE", 300)                 # four blocks
    monkeypatch.setattr(st, "TRUTH_MAX_CUSTOMERS", 600)         # truth on the first two
    memory = Study.load(n_customers=1100, n_months=12, seed=5, trials=0)
    monkeypatch.setattr(st, "FEATURE_PART_CUSTOMERS", 500)
    disk = Study.load(n_customers=1100, n_months=12, seed=5, trials=0)
    assert isinstance(memory.world, sim.World) and isinstance(disk.world, sim.WorldOnDisk)
    assert len(list((disk.world.folder / "events").glob("*.parquet"))) == 4
    assert disk.table.frame.equals(memory.table.frame) and disk.source == memory.source   # same events count and fingerprint
    for name in ("comparison", "truth", "whatif_truth", "causal_effects"):
        assert json.dumps(_plain(getattr(disk, name)), sort_keys=True, default=str) == \
            json.dumps(_plain(getattr(memory, name)), sort_keys=True, default=str), name
    assert np.array_equal(disk.oracle, memory.oracle, equal_nan=True)
    assert not {"events", "truth"} & set(vars(disk.world))    # stages scanned the world, never read it whole
    assert disk.events.equals(memory.events) and disk.world.truth.equals(memory.world.truth)   # whole when asked
    folder = disk.world.folder.parent
    assert folder.is_dir()
    del disk
    gc.collect()
    assert not folder.exists()                                   # deleted with the study


def _plain(value):
    """A stage's value as plain data to compare (frames as rows, arrays as lists, effects by their summaries)."""
    if isinstance(value, pl.DataFrame):
        return value.to_dicts()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "summary"):
        return value.summary()
    return value



def test_two_jobs_hold_blas_to_one_thread_each_while_both_run_then_let_it_go(monkeypatch):
    import threading

    from threadpoolctl import threadpool_info

    from trustml.distributed import _lightgbm_max_threads
    blas = lambda: (max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"),  # noqa: E731
                    _lightgbm_max_threads(),   # and LightGBM's process-wide cap, -1 when none
                    max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"))   # this pthread's
    before, seen, side_done = blas(), {}, threading.Event()

    def beside(self):            # the second thread's stage: it ends once the first thread has looked
        seen["beside"] = blas()
        assert threading.current_thread().name == "trustml-beside-the-model"
        return None

    def first(self):             # the calling thread, while the other one runs (it waits on nothing it needs)
        seen["while_both"] = blas()
        return None

    def second(self):            # still the calling thread: waits until the other thread has ended
        while any(t.name == "trustml-beside-the-model" for t in threading.enumerate()):
            threading.Event().wait(0.01)
        side_done.set()

    def third(self):
        seen["alone"] = blas()
    for name, f in {"causal_effects": beside, "comparison": first, "calibration": second, "folds": third}.items():
        monkeypatch.setattr(Study, name, property(f))
    Study.load(n_customers=300, n_months=8, trials=0).compute(["comparison", "calibration", "folds", "causal_effects"], jobs=2)
    assert side_done.is_set() and seen["beside"] == seen["while_both"] == (1, 1, 1)
    assert before[1] == -1
    assert seen["alone"] == before == blas()   # every core again once alone, and after
    one = {}
    monkeypatch.setattr(Study, "comparison", property(lambda self: one.setdefault("jobs1", blas())))
    Study.load(n_customers=300, n_months=8, trials=0).compute(["comparison"])
    assert one["jobs1"] == before   # one thread of stages: nothing held
