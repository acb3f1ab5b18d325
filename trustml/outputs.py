"""Outputs appear whole or not at all.

Every command writes into a hidden staging folder beside its target and moves the result into
place only when it has succeeded; a failure, Ctrl-C or a kill leaves nothing that looks like a
result (at most a hidden ``.NAME.partial-*`` folder, removed on the next run). An existing target
is never mixed with a new run's files: it is refused, or replaced whole with ``overwrite=True``.

Examples
--------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> with staged(root / "report", kind="dir") as tmp:
...     _ = (tmp / "index.html").write_text("ok")
>>> sorted(p.name for p in root.iterdir())
['report']
>>> with staged(root / "report", kind="dir") as tmp:
...     pass
Traceback (most recent call last):
...
trustml.contract.ContractError: 1 problem in the input:
  - ...report', column '--out': exists and is not empty: pass --overwrite to replace it whole, or choose another --out
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trustml.contract import ContractError, Problem

__all__ = ["staged", "check_target", "private_folder"]


def private_folder(prefix: str) -> Path:
    """A new private temporary folder (mode 0700) named ``<prefix><pid>-*``, for working files that hold raw ids.

    Its owner deletes it when done; a run that was killed cannot, so each new one first removes the folders of
    this prefix whose process is gone (a PID in use by another program keeps its folder: nothing is removed by
    mistake).

    Examples
    --------
    >>> import subprocess, sys
    >>> gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    >>> import tempfile
    >>> stale = Path(tempfile.gettempdir()) / f"trustml-doctest-{gone.stdout.strip()}-x"
    >>> stale.mkdir()
    >>> mine = private_folder("trustml-doctest-")
    >>> stale.exists(), mine.is_dir(), oct(mine.stat().st_mode & 0o777)
    (False, True, '0o700')
    >>> shutil.rmtree(mine)
    """
    import tempfile
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{prefix}*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def _refuse(target: Path, what: str) -> ContractError:
    return ContractError([Problem(str(target), "--out", what)])


def check_target(target: str | Path, *, kind: str, overwrite: bool = False) -> Path:
    """Refuse a target that cannot be written whole, before any work: wrong kind, not empty, no access."""
    target = Path(target)
    if kind == "dir" and target.is_file():
        raise _refuse(target, "is an existing file; --out needs a folder here")
    if kind == "file" and target.is_dir():
        raise _refuse(target, "is an existing folder; --out needs a file name here")
    if target.exists() and not overwrite and (kind == "file" or any(target.iterdir())):
        raise _refuse(target, "exists and is not empty: pass --overwrite to replace it whole, or choose another --out")
    parent = target.parent if str(target.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise _refuse(target, f"cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _refuse(target, f"cannot be written: no write permission in {existing}")
    return target


@contextmanager
def staged(target: str | Path, *, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging path for `target` (a folder for kind='dir'; for kind='file', a path whose folder may
    also receive sidecars such as `NAME.json`); move it all into place on success, remove it on any failure."""
    target = check_target(target, kind=kind, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}.partial-*"):  # leftovers of a killed run
        shutil.rmtree(old, ignore_errors=True)
    stage = target.parent / f".{target.name}.partial-{os.getpid()}"
    stage.mkdir()
    try:
        yield stage if kind == "dir" else stage / target.name
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if kind == "dir":
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.replace(old)
        stage.replace(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        for f in sorted(stage.iterdir()):
            f.replace(target.parent / f.name)
        stage.rmdir()
