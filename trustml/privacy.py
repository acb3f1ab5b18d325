"""Pseudonymised ids: every id shown in a report or notebook goes through here.

Examples
--------
>>> pseudonymise(["C0000001"], salt="demo")
['cust-c87612f174']
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

__all__ = ["pseudonymise", "DEFAULT_SALT"]

DEFAULT_SALT = "trustml"


def pseudonymise(ids: Iterable, salt: str | None = None) -> list[str]:
    """Stable, one-way pseudonyms: 'cust-' + 10 hex digits of sha256(salt + id).

    The salt comes from the argument, else the TRUSTML_SALT environment variable, else a fixed
    default (so notebook outputs are reproducible; set TRUSTML_SALT for real data).
    """
    salt = salt if salt is not None else os.environ.get("TRUSTML_SALT", DEFAULT_SALT)
    return [f"cust-{hashlib.sha256(f'{salt}:{i}'.encode()).hexdigest()[:10]}" for i in ids]
