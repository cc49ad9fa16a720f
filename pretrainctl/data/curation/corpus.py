"""The embedded test corpus of the curation tests and benchmark: the Python standard library's
source, split into documents of a few KB at line boundaries.

This is a stand-in used by tests and `bench.py`; the user-facing data sources live elsewhere in
`pretrainctl.data`. Files under `test/`, `idlelib/`, `site-packages/` and any `excluded` directory
are skipped, files are visited in sorted order, so the corpus is identical on every machine with
the same Python version.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from pretrainctl.data.curation.base import Doc

_SKIP = ("test", "tests", "idlelib", "site-packages", "__pycache__")


def stdlib_files(excluded: tuple[str, ...] = ()) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = set(_SKIP) | set(excluded)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return sorted(out)


def stdlib_docs(
    *, min_bytes: int = 2048, max_bytes: int = 4096, excluded: tuple[str, ...] = (), limit: int | None = None
) -> Iterator[Doc]:
    """Documents of `min_bytes`..`max_bytes` made of whole lines of stdlib files (a file's tail
    shorter than `min_bytes` is dropped). Ids are `<relative path>:<chunk index>`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    count = 0
    for path in stdlib_files(excluded):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root).as_posix()
        chunk: list[str] = []
        size = 0
        index = 0
        for line in text.splitlines(keepends=True):
            chunk.append(line)
            size += len(line)
            if size >= max_bytes or (size >= min_bytes and not line.strip()):
                yield {"id": f"{rel}:{index}", "text": "".join(chunk), "source": "stdlib"}
                count += 1
                index += 1
                chunk, size = [], 0
                if limit is not None and count >= limit:
                    return
