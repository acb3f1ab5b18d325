import pytest

from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate


@pytest.fixture(scope="session")
def world():
    return simulate(n_customers=3000, n_months=18, seed=7)


@pytest.fixture(scope="session")
def table(world):
    return build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)


@pytest.fixture(scope="session")
def trained(table):
    """Untuned (trials=0) for speed: tuning has tests of its own in test_model.py."""
    return train(table, trials=0)


@pytest.fixture(scope="session")
def model(trained):
    """The fitted TrainedModel alone (the `trained` fixture is (model, split))."""
    return trained[0]
