"""File integrity: sha256 of bundle files against their manifest, remembered per file so that a
warm start does not hash gigabytes again.

The cache ($NIM4_EDGE_CACHE, else ~/.cache/nim4-edge; verified-files.json) maps a file's real path to
(size, mtime in ns, inode, sha256) as last verified. A file whose size, mtime and inode are unchanged
and whose manifest still names that sha256 is not read again; anything else is hashed. The cache is
a convenience: unwritable or corrupt, it is ignored (the files are hashed every time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from nim4_edge.runtime.atomic import write_text_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "NIM4_EDGE_CACHE"
CACHE_FILE = "verified-files.json"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nim4-edge")


def sha256_file(path: Path, block_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def verified_sha256(path: Path, expected: str) -> bool:
    """True when the file's sha256 is `expected` (from the cache when the file is unchanged)."""
    real = Path(path).resolve()
    st = real.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, expected]
    cache_path = cache_dir() / CACHE_FILE
    cache = _load_cache(cache_path)
    if cache.get(str(real)) == stamp:
        return True
    if sha256_file(real) != expected:
        return False
    cache[str(real)] = stamp
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_path, json.dumps(cache))
    except OSError as e:  # a read-only home: verification still happened, it just is not remembered
        log.debug("integrity cache %s not written: %s", cache_path, e)
    return True
