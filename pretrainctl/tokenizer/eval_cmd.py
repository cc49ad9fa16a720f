"""``pretrainctl tokenizer eval tokenizers=[<dir or option>,...] [vocab_sizes=[...]] [texts=[...]]``.

Compares tokenizers on held-out text and on the shipped parallel samples (``samples/<lang>.txt``,
one passage in several scripts):

- bytes per token (compression: UTF-8 bytes / tokens; higher is better),
- tokens per word (fertility; words are runs of non-space characters),
- the share of words covered by three or more tokens (a superword token counts for every word it
  touches, so the measure is defined for SuperBPE too),
- parity: tokens for a language's passage / tokens for the English one (Petrov et al., 2023).

An entry of ``tokenizers`` is a tokenizer directory or a ``conf/tokenizer`` option name; options
are trained on the data option's training split on first use (cached by content hash), once per
entry of ``vocab_sizes`` if given. Prints a table, writes JSON (``out``) and, when one family has
several vocabulary sizes, a PNG of compression against vocabulary size (``plot``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from pretrainctl import build
from pretrainctl.cli import CONF, options
from pretrainctl.errors import UserError
from pretrainctl.runs import write_json
from pretrainctl.tokenizer.base import Tokenizer
from pretrainctl.tokenizer.cache import load_path
from pretrainctl.tokenizer.train_cmd import live_progress

console = Console(width=None if sys.stdout.isatty() else 160)
_WORD = re.compile(rb"\S+")


def parallel_samples() -> dict[str, str]:
    """The shipped parallel passage: language code -> text (English first)."""
    folder = files("pretrainctl.tokenizer") / "samples"
    found = {p.name.removesuffix(".txt"): p.read_text(encoding="utf-8") for p in folder.iterdir()
             if p.name.endswith(".txt")}  # fmt: skip
    return {"en": found.pop("en"), **dict(sorted(found.items()))}


def text_stats(tok: Tokenizer, docs: list[str]) -> dict:
    """Compression, fertility and the share of words in >= 3 tokens over ``docs``."""
    sizes = tok.token_bytes().numpy()
    n_bytes = n_tokens = n_words = n_split3 = 0
    for doc, ids in zip(docs, tok.encode_batch(docs)):
        data = doc.encode("utf-8")
        ends = np.cumsum(sizes[np.asarray(ids, dtype=np.int64)]) if ids else np.zeros(0, dtype=np.int64)
        spans = np.array([m.span() for m in _WORD.finditer(data)], dtype=np.int64).reshape(-1, 2)
        # tokens overlapping [s, e): the first token ending after s through the first ending at >= e
        first = np.searchsorted(ends, spans[:, 0], side="right")
        last = np.searchsorted(ends, spans[:, 1], side="left")
        pieces = last - first + 1
        n_bytes, n_tokens = n_bytes + len(data), n_tokens + len(ids)
        n_words, n_split3 = n_words + len(spans), n_split3 + int((pieces >= 3).sum())
    return {
        "bytes": n_bytes,
        "tokens": n_tokens,
        "words": n_words,
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "tokens_per_word": n_tokens / max(n_words, 1),
        "words_split_3plus": n_split3 / max(n_words, 1),
    }


def resolve_tokenizers(cfg: DictConfig, texts: list[str]) -> list[tuple[str, str, Tokenizer]]:
    """(label, family, tokenizer) for every entry (and vocabulary size)."""
    out = []
    for entry in cfg.tokenizers:
        entry = str(entry)
        if entry in options("tokenizer"):
            base = OmegaConf.load(CONF / "tokenizer" / f"{entry}.yaml")
            sizes = list(cfg.vocab_sizes) if cfg.get("vocab_sizes") and "vocab_size" in base else [None]
            for v in sizes:
                node = base.copy()
                if v is not None:
                    node.vocab_size = int(v)
                if cfg.get("train_bytes") and "train_bytes" in node:
                    node.train_bytes = int(cfg.train_bytes)
                sub = cfg.copy()
                with open_dict(sub):
                    sub.tokenizer = node
                size = node.get("vocab_size", 260)
                console.print(f"[dim]{entry} (vocabulary {size}): from the cache or trained now[/dim]")
                start = time.perf_counter()
                spec = build.build_tokenizer_spec(sub)
                with live_progress(spec.options()["kind"]) as report:
                    tok = spec.build(texts, Path(cfg.cache_dir), report)
                tok.build_s = time.perf_counter() - start  # training time, or loading time when cached
                out.append((f"{entry}-{tok.vocab_size}" if v else entry, entry, tok))
        elif Path(entry).expanduser().is_dir():
            tok = load_path(entry, key="tokenizers entry")
            meta = json.loads((Path(entry).expanduser() / "tokenizer.json").read_text())
            out.append((Path(entry).name, meta["kind"], tok))
        else:
            raise UserError(
                f"tokenizers entry {entry!r} is neither a tokenizer directory nor an option "
                f"({', '.join(options('tokenizer'))})."
            )
    return out


def held_out(cfg: DictConfig) -> tuple[str, list[str]]:
    if cfg.get("texts"):
        docs = []
        for name in cfg.texts:
            path = Path(str(name)).expanduser()
            if not path.is_file():
                raise UserError(f"texts entry {name} is not a file.")
            docs.append(path.read_text(encoding="utf-8"))
        return "texts", docs
    source = getattr(build.build_datamodule(cfg), "source", None)
    if source is None:
        raise UserError("this data option has no single validation split to measure; give texts=[...].")
    docs, seen = [], 0
    for doc in source.documents("val"):
        if seen >= cfg.max_bytes:
            break
        docs.append(doc)
        seen += len(doc.encode("utf-8"))
    return "held-out", docs


def run_tokenizer_eval(cfg: DictConfig) -> dict:
    if not cfg.get("tokenizers"):
        raise UserError("tokenizers is required, e.g. tokenizers=[bpe,superbpe] or tokenizers=[path/to/tok].")
    name, docs = held_out(cfg)
    train_texts = build.build_datamodule(cfg).train_texts()
    samples = parallel_samples() if cfg.parallel else {}
    results = []
    for label, family, tok in resolve_tokenizers(cfg, train_texts):
        row = {"tokenizer": label, "family": family, "vocab_size": tok.vocab_size}
        start = time.perf_counter()
        row[name] = text_stats(tok, docs)
        row["encode_s"] = time.perf_counter() - start  # encoding and counting the held-out text
        if hasattr(tok, "build_s"):
            row["train_or_load_s"] = tok.build_s
        if samples:
            per = {lang: text_stats(tok, [text]) for lang, text in samples.items()}
            for lang in per:
                per[lang]["parity"] = per[lang]["tokens"] / per["en"]["tokens"]
            row["parallel"] = per
        results.append(row)
    console.print(_table(results, name, list(samples)))
    report = {"texts": name, "documents": len(docs), "results": results}
    if cfg.get("out"):
        write_json(Path(str(cfg.out)), report)
        console.print(f"wrote {cfg.out}")
    if cfg.get("plot") and _plot(results, name, Path(str(cfg.plot))):
        console.print(f"wrote {cfg.plot}")
    return report


def _table(results: list[dict], name: str, langs: list[str]) -> Table:
    table = Table(title=f"tokenizers on {name} text" + (" and the parallel samples" if langs else ""))
    for col in ("tokenizer", "vocab", "bytes/token", "tokens/word", "words in ≥3"):
        table.add_column(col, justify="right")
    for lang in langs[1:]:
        table.add_column(f"parity {lang}", justify="right")
    for r in results:
        s = r[name]
        cells = [r["tokenizer"], f"{r['vocab_size']:,}", f"{s['bytes_per_token']:.3f}",
                 f"{s['tokens_per_word']:.3f}", f"{100 * s['words_split_3plus']:.1f}%"]  # fmt: skip
        cells += [f"{r['parallel'][lang]['parity']:.2f}" for lang in langs[1:]]
        table.add_row(*cells)
    return table


def _plot(results: list[dict], name: str, path: Path) -> bool:
    """Bytes per token against vocabulary size, one line per family with several sizes."""
    families: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        families.setdefault(r["family"], []).append((r["vocab_size"], r[name]["bytes_per_token"]))
    families = {f: sorted(p) for f, p in families.items() if len({v for v, _ in p}) > 1}
    if not families:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for family, points in families.items():
        ax.plot([v for v, _ in points], [b for _, b in points], marker="o", label=family)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel(f"bytes per token ({name} text)")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def hydra_task(cfg: DictConfig) -> None:
    run_tokenizer_eval(cfg)
