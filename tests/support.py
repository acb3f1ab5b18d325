"""Paths the tests share (a module of its own: `conftest` is a name several folders use)."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """A dataset under ../shared/data; skips with a visible reason where it is absent (a user's machine)."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared real datasets are only beside the repo in CI and dev machines")
    return path
