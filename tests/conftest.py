from pathlib import Path

import pytest

from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """A dataset under ../shared/data; skips with a visible reason where it is absent (a user's machine)."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared real datasets are only beside the repo in CI and dev machines")
    return path


@pytest.fixture(scope="session")
def world():
    return simulate(n_customers=3000, n_months=18, seed=7)


@pytest.fixture(scope="session")
def table(world):
    return build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)


@pytest.fixture(scope="session")
def trained(table):
    return train(table)


@pytest.fixture(scope="session")
def model(trained):
    """The fitted TrainedModel alone (the `trained` fixture is (model, split))."""
    return trained[0]
