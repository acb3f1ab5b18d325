"""Repository-wide pytest hooks: nbval runs every notebook in notebooks/; those about a shared public
dataset skip, with the reason, where ../shared is absent (a user's machine)."""

import json
import os
from pathlib import Path

import pytest

# Your own data is pseudonymised with a secret salt made once per machine; the suite (and the notebook kernels
# nbval starts, which inherit this environment) uses a fixed one so that stored outputs compare equal anywhere.
os.environ.setdefault("TRUSTML_SALT", "trustml-test-suite")

SHARED = Path(__file__).resolve().parents[1] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix != ".ipynb":
            continue
        runs_on = json.loads(path.read_text()).get("metadata", {}).get("trustml", {}).get("runs_on", "any")
        if runs_on not in ("any", "simulated") and not (SHARED / runs_on).exists():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED / runs_on} not found: the shared public datasets are "
                                                    "beside the repo in CI and on dev machines, not on a user's machine"))
