"""The Dask run gives the single-machine results: features (equal frames), scores and SHAP (1e-12), campaign."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

pytest.importorskip("distributed", reason="trustml on Dask needs the optional extra `scale` (dask[distributed])")

from trustml import distributed
from trustml.contract import ContractError
from trustml.explanations import explain
from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import read_world, simulate_to_dir
from trustml.whatif import campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    """`connect('local')`: a LocalCluster(n_workers=2, threads_per_worker=1) in worker processes, stopped by close()."""
    with distributed.connect("local") as c:
        info = c.scheduler_info(n_workers=-1)["workers"].values()
        assert len(info) == 2 and all(w["nthreads"] == 1 for w in info)
        yield c
    assert c.status == "closed" and c.cluster.status.name == "closed"


def test_a_local_cluster_leaves_this_process_environment_as_it_was():
    import os
    before = dict(os.environ)
    with distributed.connect("local") as c:
        assert dict(os.environ) == before   # Dask's nanny had left OMP_NUM_THREADS=1 and more for every later process
        assert c.run(lambda: os.environ.get("OMP_NUM_THREADS")) and set(c.run(lambda: os.environ["OMP_NUM_THREADS"]).values()) == {"1"}
    assert dict(os.environ) == before


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return simulate_to_dir(600, 12, 4, tmp_path_factory.mktemp("dist") / "world")


@pytest.fixture(scope="module")
def single(world_dir):
    customers, events = read_world(world_dir)
    with pl.Config(engine_affinity="in-memory"):  # see test_features_with_polars_default_engine
        table = build_features(customers, events, Snapshots())
    trained, split = train(table, trials=0, n_estimators=80, early_stopping=False)
    return table, trained, split


@pytest.fixture(scope="module")
def parted(world_dir, client):
    return distributed.features(world_dir, Snapshots(), cluster=client, partitions=5)


def test_features_equal_single_machine(single, parted):
    table = single[0]
    got = parted.collect()
    assert parted.n_partitions == 5 and sum(parted.heights()) == table.frame.height
    assert_frame_equal(got.frame, table.frame, check_exact=True)
    assert got.registry == table.registry and got.as_of == table.as_of and got.dropped == table.dropped
    # every customer lives in exactly one partition
    ids = [set(f["customer_id"]) for f in parted.client.gather(parted.parts)]
    assert sum(len(s) for s in ids) == len(set().union(*ids))


def test_features_with_polars_default_engine(world_dir, single, parted):
    """polars' default engine sums in pieces sized by the whole table: equal to the last bits or so, not bitwise."""
    customers, events = read_world(world_dir)
    default = build_features(customers, events, Snapshots()).frame
    assert_frame_equal(parted.collect().frame, default, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_features_agree_when_a_partition_lacks_an_event_type(world_dir, client):
    """Many small partitions: rare event types are missing from some, yet every feature is built and equal."""
    customers, events = read_world(world_dir)
    as_of = dt.datetime(2024, 12, 1)
    with pl.Config(engine_affinity="in-memory"):
        want = build_features(customers, events, Snapshots(every="2mo"), as_of=as_of)
    parted = distributed.features(world_dir, Snapshots(every="2mo"), cluster=client, as_of=as_of, partitions=16)
    parts = client.gather(parted.parts)
    assert any(f.height and events.filter(pl.col("customer_id").is_in(f["customer_id"].unique().implode()))["event_type"].n_unique()
               < events["event_type"].n_unique() for f in parts)
    # equal, though not always to the last bit: polars evaluates some float expressions along paths that depend on
    # the table's size (seen here: a 30-day trend of 3.0 vs 2.9999999999999996 on the first snapshot)
    got = parted.collect().frame
    assert_frame_equal(got.select("customer_id", "snapshot_date", "churned", "plan"), want.frame.select("customer_id", "snapshot_date", "churned", "plan"))
    assert_frame_equal(got, want.frame, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_scores_and_shap_equal_single_machine(single, parted):
    table, trained, _ = single
    risk = distributed.score(trained, parted)
    np.testing.assert_allclose(risk, trained.predict_risk(table.frame), rtol=0, atol=1e-12)
    ex, want = distributed.explain(trained, parted.latest()), explain(trained, table.latest())
    np.testing.assert_allclose(ex.values, want.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ex.base_values, want.base_values, rtol=0, atol=1e-12)
    assert ex.feature_names == want.feature_names
    # an in-memory table is cut and sent by the library; the row order is the caller's
    shuffled = table.frame.sample(fraction=1.0, seed=1)
    np.testing.assert_allclose(distributed.score(trained, shuffled, cluster=parted.client), trained.predict_risk(shuffled), rtol=0, atol=1e-12)


def test_explain_to_parquet_parts(single, parted, tmp_path, monkeypatch):
    """Each partition writes its explanations; pseudonyms use this process's salt, not the workers' environment."""
    monkeypatch.setenv("TRUSTML_SALT", "salt-of-the-client")
    table, trained, _ = single
    n = distributed.explain(trained, parted.latest(), out=tmp_path / "ex")
    got = pl.read_parquet(tmp_path / "ex" / "*.parquet").sort("customer")
    assert n == table.latest().height == got.height
    want = explain(trained, table.latest())
    from trustml.explanations import explanations_frame
    assert_frame_equal(got, explanations_frame(trained, table.latest(), want).sort("customer"), check_exact=False, rel_tol=0, abs_tol=1e-12)


def test_campaign_equals_single_machine(single, parted):
    table, trained, _ = single
    latest = table.latest()
    want = campaign(trained, latest, latest["monthly_price"].to_numpy() * 12, top_n=25)
    got = distributed.campaign(trained, parted.latest(), lambda f: f["monthly_price"].to_numpy() * 12, top_n=25)
    assert_frame_equal(got, want, check_exact=False, rel_tol=0, abs_tol=1e-12)
    got_mem = distributed.campaign(trained, latest, latest["monthly_price"].to_numpy() * 12, top_n=25, cluster=parted.client)
    assert_frame_equal(got_mem, want, check_exact=False, rel_tol=0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="repeats"):
        distributed.campaign(trained, parted, 100.0, top_n=5)


def test_train_on_one_worker(single, parted):
    table, trained, split = single
    got, got_split = distributed.train(parted, trials=0, n_estimators=80, early_stopping=False)
    assert got_split == split
    assert got.model.booster_.model_to_string() == trained.model.booster_.model_to_string()
    assert got.metadata["trained_on"]["sample"]["fraction"] == 1.0
    half, _ = distributed.train(parted, sample=0.5, trials=0, n_estimators=80, early_stopping=False)
    s = half.metadata["trained_on"]["sample"]
    assert 0.35 * s["of_customers"] < s["customers"] < 0.65 * s["of_customers"]
    assert s["labelled_rows"] < table.labelled().height


def test_model_payload_round_trip(single):
    _, trained, _ = single
    back = distributed.model_from_payload(distributed.model_payload(trained))
    frame = single[0].frame
    np.testing.assert_array_equal(back.predict_risk(frame), trained.predict_risk(frame))


def test_connect_rejects_a_bad_address():
    with pytest.raises(ContractError, match="scheduler address"):
        distributed.connect("my-cluster")


def test_a_study_on_the_cluster_equals_the_single_machine_study(client):
    """`Study.load(cluster=)` (and so `trustml report --cluster`) builds features and explanations on Dask: the same."""
    from trustml.study import Study
    here = Study.load(n_customers=600, n_months=12, seed=3, trials=0)
    there = Study.load(n_customers=600, n_months=12, seed=3, trials=0, cluster=client)
    assert_frame_equal(there.table.frame, here.table.frame)
    assert np.array_equal(there.trained.predict_risk(there.test), here.trained.predict_risk(here.test))
    assert np.allclose(there.explanation.values, here.explanation.values, rtol=0, atol=1e-12)
    assert np.allclose(there.explanation.base_values, here.explanation.base_values, rtol=0, atol=1e-12)
