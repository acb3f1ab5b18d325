import numpy as np
import polars as pl
import pytest

from trustml.contract import ContractError
from trustml.features import FeatureTable, Snapshots
from trustml.leakage import check_leakage, describe_leaks
from trustml.mapping import Mapping, flat_table
from trustml.model import train


def _flat(n=1500, seed=0, **extra):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.25).astype(int)
    cols = {"id": [f"c{i}" for i in range(n)], "left": np.where(y == 1, "Yes", "No"),
            "tenure": rng.integers(1, 72, n) - 10 * y, "spend": rng.normal(50, 10, n) + 5 * y,
            "plan": rng.choice(["a", "b", "c"], n)}
    cols.update({k: f(y, rng) for k, f in extra.items()})
    df = pl.DataFrame(cols)
    return flat_table(df, Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": ["Yes"]}}))


@pytest.mark.parametrize("leak", [
    # a reason recorded only for churners: missing for everyone else
    lambda y, rng: [rng.choice(["price", "service", "moved"]) if v else None for v in y],
    # a status exported after the fact, as text
    lambda y, rng: np.where(y == 1, "closed", "open"),
    # a number that is the label in disguise (days since cancellation, 0 for stayers)
    lambda y, rng: np.where(y == 1, rng.integers(1, 90, len(y)), 0),
])
def test_planted_leaks_in_a_flat_table_are_flagged(leak):
    table = _flat(leak_col=leak)
    leaks = check_leakage(table.labelled(), table.registry)
    assert leaks["feature"].to_list() == ["leak_col"]
    assert "ROC-AUC" in leaks["evidence"][0]


def test_honest_features_are_not_flagged():
    table = _flat()
    assert check_leakage(table.labelled(), table.registry).height == 0


def test_train_warns_and_refuses_on_request():
    table = _flat(leak_col=lambda y, rng: np.where(y == 1, "closed", "open"))
    trained, _ = train(table, trials=0)
    assert [r["feature"] for r in trained.metadata["leakage"]] == ["leak_col"]
    assert describe_leaks(trained.metadata["leakage"])[0].startswith("WARNING: suspected leakage in 'leak_col'")
    with pytest.raises(ContractError, match="leak_col"):
        train(table, trials=0, leakage="refuse")


def test_a_status_attribute_in_an_event_log_is_flagged_against_eventual_churn(world):
    """A subscriptions export with a 'status' column: right for the customer's last row only, yet it
    knows, at every earlier snapshot, who will leave. The per-customer check catches it."""
    from trustml.features import DEFAULT_SPEC, FeatureSpec, build_features
    gone = world.events.filter(pl.col("event_type") == "cancellation")["customer_id"].unique()
    customers = world.customers.with_columns(status=pl.when(pl.col("customer_id").is_in(gone.implode())).then(pl.lit("cancelled"))
                                             .otherwise(pl.lit("active")))
    spec = (*DEFAULT_SPEC, FeatureSpec("status", "attribute", pillar="account", categorical=True, unit="category"))
    table = build_features(customers, world.events, Snapshots(), spec, as_of=world.as_of)
    row_level = check_leakage(table.labelled(), table.registry)
    per_customer = check_leakage(table.labelled(), table.registry, per_customer=True)
    assert "status" not in row_level["feature"].to_list()  # the usual check alone misses it
    assert per_customer["feature"].to_list() == ["status"]
    assert per_customer["check"][0] == "value vs eventual churn"
    assert isinstance(table, FeatureTable)


def test_beyond_max_rows_a_sample_of_whole_customers_is_checked_and_still_finds_the_leak(monkeypatch):
    import trustml.leakage as leakage
    table = _flat(n=3000, leak_col=lambda y, rng: np.where(y == 1, "closed", "open"))
    seen = []
    real = leakage._auc
    monkeypatch.setattr(leakage, "_auc", lambda y, s: seen.append(len(y)) or real(y, s))
    leaks = check_leakage(table.labelled(), table.registry, max_rows=800)
    assert leaks["feature"].to_list() == ["leak_col"]
    assert seen and 0 < max(seen) <= 1000 and len(set(seen)) == 1          # one sample of about 800 rows, not 3000
    seen.clear()
    assert check_leakage(table.labelled(), table.registry)["feature"].to_list() == ["leak_col"] and set(seen) == {3000}
