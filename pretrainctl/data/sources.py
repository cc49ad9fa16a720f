"""Document sources: the embedded stdlib corpus, local files, and hub datasets.

Every source returns its training and validation documents as lists of strings; the split is
deterministic (by file for the stdlib corpus, by document index otherwise). ``fingerprint()``
identifies the content so tokenized data can be cached.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from pretrainctl.errors import UserError

_EXCLUDED_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__"}


class Source:
    """Base class: subclasses fill ``_load()`` returning (train_docs, val_docs)."""

    _cache: tuple[list[str], list[str]] | None = None

    def documents(self, split: str) -> list[str]:
        if self._cache is None:
            self._cache = self._load()
        train, val = self._cache
        return train if split == "train" else val

    def _load(self) -> tuple[list[str], list[str]]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


def _split_by_index(docs: list[str], val_every: int) -> tuple[list[str], list[str]]:
    """Every ``val_every``-th document (starting with the first) goes to validation."""
    val = [d for i, d in enumerate(docs) if i % val_every == 0]
    train = [d for i, d in enumerate(docs) if i % val_every != 0]
    return train, val


class StdlibSource(Source):
    """The Python standard library's ``.py`` files (code plus English docs, ~11 MB, no download).

    Files are sorted by path; every ``val_every``-th file is held out for validation (with the
    default 20 this is the split on which ``gzip -9`` reaches 1.94 and ``xz -9e`` 1.66 bits per byte).
    ``max_files`` limits the corpus for quick experiments and tests.
    """

    def __init__(self, val_every: int = 20, max_files: int | None = None) -> None:
        if val_every < 2:
            raise UserError(f"data.source.val_every must be >= 2, not {val_every}.")
        self.val_every = val_every
        self.max_files = max_files
        self.root = Path(sysconfig.get_paths()["stdlib"])

    @functools.cached_property
    def _files(self) -> list[Path]:
        files = sorted(
            p
            for p in self.root.rglob("*.py")
            if not (set(p.relative_to(self.root).parts[:-1]) & _EXCLUDED_DIRS)
        )
        return files[: self.max_files] if self.max_files else files

    def files(self) -> list[Path]:
        """The corpus files, sorted by path (walked once per source)."""
        return self._files

    def _load(self) -> tuple[list[str], list[str]]:
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in self.files()]
        return _split_by_index(docs, self.val_every)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"stdlib {sys.version} {self.val_every}".encode())
        for p in self.files():
            h.update(f"{p.relative_to(self.root)}:{p.stat().st_size}".encode())
        return h.hexdigest()[:16]


def _infer_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".md": "text"}
    if suffix not in formats:
        raise UserError(f"cannot tell the format of {path}; set data.source.format to json, parquet or text.")
    return formats[suffix]


def _texts(rows: Iterable[dict], text_field: str, where: str) -> list[str]:
    out = []
    for row in rows:
        if text_field not in row:
            raise UserError(
                f"{where} has no field {text_field!r}; set data.source.text_field to one of {sorted(row)}."
            )
        if row[text_field]:
            out.append(str(row[text_field]))
    return out


class FilesSource(Source):
    """Local jsonl / parquet / txt files through ``datasets`` (txt: one document per line).

    Validation documents come from ``val_paths`` if given, else every ``val_every``-th document.
    """

    def __init__(
        self,
        paths: list[str] | str,
        val_paths: list[str] | str | None = None,
        text_field: str = "text",
        format: str | None = None,
        val_every: int = 20,
    ) -> None:
        self.paths = self._expand([paths] if isinstance(paths, str) else list(paths))
        self.val_paths = (
            None
            if val_paths is None
            else self._expand([val_paths] if isinstance(val_paths, str) else list(val_paths))
        )
        self.text_field = text_field
        self.format = format or _infer_format(self.paths[0])
        self.val_every = val_every

    @staticmethod
    def _expand(patterns: list[str]) -> list[str]:
        out: list[str] = []
        for pattern in patterns:
            p = Path(pattern).expanduser()
            matches = sorted(p.parent.glob(p.name)) if any(c in p.name for c in "*?[") else [p]
            missing = [m for m in matches if not m.is_file()]
            if not matches or missing:
                raise UserError(f"data file {pattern} does not exist (data.source.paths).")
            out.extend(str(m) for m in matches)
        return out

    def _read(self, paths: list[str]) -> list[str]:
        import datasets

        ds = datasets.load_dataset(self.format, data_files=paths, split="train")
        field = "text" if self.format == "text" else self.text_field
        return _texts(ds, field, paths[0])

    def _load(self) -> tuple[list[str], list[str]]:
        docs = self._read(self.paths)
        if self.val_paths:
            return docs, self._read(self.val_paths)
        return _split_by_index(docs, self.val_every)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"files {self.format} {self.text_field} {self.val_every}".encode())
        for p in self.paths + (self.val_paths or []):
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


class HubSource(Source):
    """A hub dataset, streamed: the first ``max_documents`` of ``split`` (validation: ``val_split``
    if given, else every ``val_every``-th streamed document). ``path`` may also be a local folder in
    hub layout, which is how it is tested on machines without network access."""

    def __init__(
        self,
        path: str,
        name: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        text_field: str = "text",
        max_documents: int = 20_000,
        val_every: int = 20,
    ) -> None:
        self.path, self.name, self.split, self.val_split = path, name, split, val_split
        self.text_field, self.max_documents, self.val_every = text_field, max_documents, val_every

    def _stream(self, split: str) -> list[str]:
        from itertools import islice

        import datasets

        try:
            ds = datasets.load_dataset(self.path, self.name, split=split, streaming=True)
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"cannot load hub dataset data.source.path={self.path!r} split={split!r}: {first}"
            ) from None
        return _texts(islice(ds, self.max_documents), self.text_field, self.path)

    def _load(self) -> tuple[list[str], list[str]]:
        docs = self._stream(self.split)
        if self.val_split:
            return docs, self._stream(self.val_split)
        return _split_by_index(docs, self.val_every)

    def fingerprint(self) -> str:
        key = [self.path, self.name, self.split, self.val_split, self.text_field, self.max_documents]
        return hashlib.sha256(repr(key).encode()).hexdigest()[:16]
