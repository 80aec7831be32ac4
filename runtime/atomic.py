"""Write outputs so that a failure never leaves anything half-written: build in a temporary path
next to the target (same filesystem), then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nim4_edge.runtime.errors import Nim4Error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give them the mode an ordinary new file would get."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes `target`, on error it is removed.

    An existing `target` is an error unless `overwrite`; then it is replaced only after the new
    directory is complete.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise Nim4Error(f"{target} already exists; choose another path or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    set_default_permissions(tmp)
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file in the same directory, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        set_default_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
