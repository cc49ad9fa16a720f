"""Document sources: the embedded stdlib corpus, local files, and hub datasets.

Every source returns its training and validation documents as lists of strings; the split is
deterministic (by file for the stdlib corpus, by document index otherwise). ``fingerprint()``
identifies the content so tokenized data can be cached.

``stream(split)`` yields the same documents one at a time as curation ``Doc`` dicts (``id``, ``text``,
``source``, ``meta`` with ``split`` and ``url``) for ``pretrainctl data prepare``, which must not hold
a corpus in memory. ``metadata(split)`` gives each document's source string (the stdlib module path,
a file name or a URL field): the prefix of metadata conditioning (MeCo, Gao et al. 2025).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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

    def stream(self, split: str) -> Iterator[dict[str, Any]]:
        """The documents of ``split`` one at a time, as curation documents. The default walks the
        loaded lists; sources that can read lazily override it."""
        for i, (text, meta) in enumerate(zip(self.documents(split), self.metadata(split))):
            yield {
                "id": f"{split}-{i}",
                "text": text,
                "source": self.label,
                "meta": {"split": split, "url": meta},
            }

    def metadata(self, split: str) -> list[str]:
        """One source string per document of ``split`` (same order as ``documents``)."""
        return [self.label] * len(self.documents(split))

    label = "source"  # the ``source`` field of streamed documents


def _split_by_index(docs: list[str], val_every: int) -> tuple[list[str], list[str]]:
    """Every ``val_every``-th document (starting with the first) goes to validation."""
    val = [d for i, d in enumerate(docs) if i % val_every == 0]
    train = [d for i, d in enumerate(docs) if i % val_every != 0]
    return train, val


class StdlibSource(Source):
    """The Python standard library's ``.py`` files (code plus English docs, ~11 MB, no download).

    Files are sorted by path; every ``val_every``-th file is held out for validation (with the
    default 20 this is the split on which ``gzip -9`` reaches 1.94 and ``xz -9e`` 1.66 bits per byte).
    ``max_files`` limits the corpus for quick experiments and tests. ``include`` / ``exclude`` keep or
    drop top-level packages and modules (e.g. ``[email, http, json]``), which splits the corpus into
    sub-sources for a mixture.
    """

    def __init__(
        self,
        val_every: int = 20,
        max_files: int | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> None:
        if val_every < 2:
            raise UserError(f"data.source.val_every must be >= 2, not {val_every}.")
        self.val_every = val_every
        self.max_files = max_files
        self.include = set(include) if include else None
        self.exclude = set(exclude or ())
        self.root = Path(sysconfig.get_paths()["stdlib"])

    def _wanted(self, rel: Path) -> bool:
        top = rel.parts[0].removesuffix(".py")
        if set(rel.parts[:-1]) & _EXCLUDED_DIRS or top in self.exclude:
            return False
        return self.include is None or top in self.include

    @functools.cached_property
    def _files(self) -> list[Path]:
        files = sorted(p for p in self.root.rglob("*.py") if self._wanted(p.relative_to(self.root)))
        if not files:
            raise UserError(
                f"no stdlib files match include={sorted(self.include or [])} exclude={sorted(self.exclude)}."
            )
        return files[: self.max_files] if self.max_files else files

    def files(self) -> list[Path]:
        """The corpus files, sorted by path (walked once per source)."""
        return self._files

    def _load(self) -> tuple[list[str], list[str]]:
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in self.files()]
        return _split_by_index(docs, self.val_every)

    def _split_files(self, split: str) -> list[Path]:
        return [p for i, p in enumerate(self.files()) if (i % self.val_every == 0) == (split == "val")]

    def module_name(self, path: Path) -> str:
        """``json/decoder.py`` -> ``json.decoder`` (a package's ``__init__`` is the package)."""
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)

    def metadata(self, split: str) -> list[str]:
        return [self.module_name(p) for p in self._split_files(split)]

    def stream(self, split: str) -> Iterator[dict[str, Any]]:
        for p in self._split_files(split):
            name = self.module_name(p)
            yield {
                "id": str(p.relative_to(self.root)),
                "text": p.read_text(encoding="utf-8", errors="replace"),
                "source": "stdlib",
                "meta": {"split": split, "url": name},
            }

    label = "stdlib"

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"stdlib {sys.version} {self.val_every}".encode())
        if self.include is not None or self.exclude:  # (keeps the default corpus's cache keys)
            h.update(f"{sorted(self.include or [])} {sorted(self.exclude)}".encode())
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


def _jsonl_rows(path: str) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


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
        meta_field: str | None = None,
    ) -> None:
        """``meta_field``: a field holding each document's source string (e.g. ``url``) for metadata
        conditioning; without it the file name is used."""
        self.meta_field = meta_field
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

    label = "files"

    def _rows(self, path: str) -> Iterator[tuple[str, str]]:
        """(text, metadata) of one file's non-empty documents, read lazily (bounded memory)."""
        field = "text" if self.format == "text" else self.text_field
        fallback = Path(path).name
        if self.format == "text":
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line := line.rstrip("\r\n"):
                        yield line, fallback
            return
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if field not in names:
                raise UserError(
                    f"{path} has no field {field!r}; set data.source.text_field to one of {names}."
                )
            cols = [field] + ([self.meta_field] if self.meta_field in names else [])
            rows: Iterable[dict] = (
                r for b in pf.iter_batches(batch_size=256, columns=cols) for r in b.to_pylist()
            )
        else:
            rows = _jsonl_rows(path)
        for row in rows:
            if field not in row:
                raise UserError(
                    f"{path} has no field {field!r}; set data.source.text_field to one of {sorted(row)}."
                )
            if row[field]:
                yield (
                    str(row[field]),
                    str(row.get(self.meta_field) or fallback) if self.meta_field else fallback,
                )

    def stream(self, split: str) -> Iterator[dict[str, Any]]:
        if self.val_paths:
            paths, keep = (self.val_paths if split == "val" else self.paths), None
        else:
            paths, keep = self.paths, split
        index = 0
        for path in paths:
            for text, meta in self._rows(path):
                is_val = index % self.val_every == 0
                index += 1
                if keep is not None and is_val != (keep == "val"):
                    continue
                doc_meta = {"split": split, "url": meta}
                yield {
                    "id": f"{Path(path).name}:{index - 1}",
                    "text": text,
                    "source": "files",
                    "meta": doc_meta,
                }

    def metadata(self, split: str) -> list[str]:
        return [d["meta"]["url"] for d in self.stream(split)]

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
        meta_field: str | None = None,
    ) -> None:
        """``meta_field``: a field holding each document's source string (e.g. ``url``) for metadata
        conditioning; without it the dataset path is used."""
        self.meta_field = meta_field
        self.path, self.name, self.split, self.val_split = path, name, split, val_split
        self.text_field, self.max_documents, self.val_every = text_field, max_documents, val_every

    label = "hub"

    def _open(self, split: str) -> Iterable[dict]:
        from itertools import islice

        import datasets

        try:
            ds = datasets.load_dataset(self.path, self.name, split=split, streaming=True)
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"cannot load hub dataset data.source.path={self.path!r} split={split!r}: {first}"
            ) from None
        return islice(ds, self.max_documents)

    def _stream(self, split: str) -> list[str]:
        return _texts(self._open(split), self.text_field, self.path)

    def stream(self, split: str) -> Iterator[dict[str, Any]]:
        own = self.val_split if split == "val" and self.val_split else None
        index = 0
        for row in self._open(own or self.split):
            text = _texts([row], self.text_field, self.path)
            if not text:
                continue
            is_val = index % self.val_every == 0
            index += 1
            if own is None and is_val != (split == "val"):
                continue
            meta = str(row.get(self.meta_field) or self.path) if self.meta_field else self.path
            yield {
                "id": f"{index - 1}",
                "text": text[0],
                "source": "hub",
                "meta": {"split": split, "url": meta},
            }

    def metadata(self, split: str) -> list[str]:
        return [d["meta"]["url"] for d in self.stream(split)]

    def _load(self) -> tuple[list[str], list[str]]:
        docs = self._stream(self.split)
        if self.val_split:
            return docs, self._stream(self.val_split)
        return _split_by_index(docs, self.val_every)

    def fingerprint(self) -> str:
        key = [self.path, self.name, self.split, self.val_split, self.text_field, self.max_documents]
        return hashlib.sha256(repr(key).encode()).hexdigest()[:16]
