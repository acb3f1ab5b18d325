"""Pseudonymised ids: every id shown in a report or notebook goes through here.

A pseudonym is 'cust-' + 10 hex digits of SHA-256(salt + id). Which salt:

1. the `salt` argument, else
2. the ``TRUSTML_SALT`` environment variable, else
3. on your own data (`use_secret_salt`, which `Study` calls for every file it reads): a secret
   salt generated once and kept outside every output, in ``$XDG_CONFIG_HOME/trustml/salt``
   (``~/.config/trustml/salt``), with a notice when it is created. Keep it private: with it,
   anyone holding a list of candidate ids can recompute the pseudonyms;
4. otherwise the fixed public salt `DEFAULT_SALT`: for the simulated world only, so that its
   notebooks and reports are the same bytes on every machine.

Examples
--------
>>> pseudonymise(["C0000001"], salt="demo")
['cust-c87612f174']
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["pseudonymise", "use_secret_salt", "salt_file", "DEFAULT_SALT"]

DEFAULT_SALT = "trustml"
_secret: str | None = None


def salt_file() -> Path:
    """Where the secret salt for your own data is kept (outside every output folder)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trustml" / "salt"


def use_secret_salt() -> None:
    """Pseudonymise with a secret salt from now on in this process (your own data, not the simulator's).

    TRUSTML_SALT wins if set; else the salt in `salt_file()`, created once (0600) with a notice on stderr.
    """
    global _secret
    if os.environ.get("TRUSTML_SALT") or _secret is not None:
        return
    path = salt_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".salt.{os.getpid()}")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
        print(f"trustml: generated a secret salt for pseudonymous ids in {path}; keep it private, and set TRUSTML_SALT "
              "on other machines to get the same pseudonyms", file=sys.stderr)
    _secret = path.read_text().strip()


def pseudonymise(ids: Iterable, salt: str | None = None) -> list[str]:
    """Stable, one-way pseudonyms: 'cust-' + 10 hex digits of sha256(salt + id); the salt as the module says."""
    salt = salt if salt is not None else (os.environ.get("TRUSTML_SALT") or _secret or DEFAULT_SALT)
    return [f"cust-{hashlib.sha256(f'{salt}:{i}'.encode()).hexdigest()[:10]}" for i in ids]
