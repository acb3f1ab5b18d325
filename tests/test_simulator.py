import io

import numpy as np
import polars as pl
import pytest

from trustml.contract import validate
from trustml.simulator import Policy, SimConfig, read_world, simulate, true_effects, write_world


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


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_customers"):
        simulate(0, 12)
