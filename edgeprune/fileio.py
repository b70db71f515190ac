"""Atomic writes: a reader never sees a half-written file, and nothing is overwritten without force."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgeprune.errors import EdgepruneError


def refuse_overwrite(path: Path, force: bool) -> None:
    """Raise if `path` exists and `force` is not set."""
    if path.exists() and not force:
        raise EdgepruneError(f"{path} already exists; pass --force to overwrite it")


@contextmanager
def atomic_path(final: Path, force: bool = False, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    refuse_overwrite(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; results and models are meant to be shared
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any, force: bool = False) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", force=force)


def write_text(path: Path, text: str, force: bool = False) -> None:
    """Write a text file atomically."""
    with atomic_path(Path(path), force=force) as tmp:
        tmp.write_text(text)


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or corrupt file into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"{path}: not valid JSON ({exc}); expected a {what}") from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
