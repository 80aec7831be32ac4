"""Write outputs so that a failure never leaves anything half-written: build in a temporary path
next to the target (same filesystem), then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
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


def remove_dead_writers_files(path: Path) -> None:
    """Temporary files a killed writer left next to `path`, named `.NAME.tmp-PID-...` by a writer that
    puts its process id in them: removed when that process is gone; a writer still running keeps its own."""
    path = Path(path)
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
        pid = tmp.name[len(f".{path.name}.tmp-"):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (PermissionError, OverflowError):  # another user's process, alive; or no such pid at all
            continue


def copy_prefix(src, dst, count: int) -> int:
    """The first `count` bytes of file src to file dst (at its start), in the kernel where it can
    (copy_file_range); the bytes copied (fewer when src is shorter)."""
    dst.flush()
    done = 0
    try:
        while done < count:
            n = os.copy_file_range(src.fileno(), dst.fileno(), count - done, done, done)
            if n == 0:
                break
            done += n
        dst.seek(done)
    except (AttributeError, OSError):  # no copy_file_range here (macOS), or not between these files
        done = 0
        src.seek(0)
        dst.seek(0)
        dst.truncate()
    src.seek(done)  # copy_file_range with offsets leaves the file positions where they were
    while done < count:
        chunk = src.read(min(1 << 24, count - done))
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
    return done


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
