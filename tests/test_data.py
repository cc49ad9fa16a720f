import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pretrainctl.data.datamodule import PackedDataModule
from pretrainctl.data.packing import batch_rows, pack_documents
from pretrainctl.data.sources import FilesSource, HubSource, StdlibSource
from pretrainctl.errors import UserError
from pretrainctl.tokenizer.bytes import ByteTokenizer


def test_pack_documents_inserts_eos_and_drops_tail():
    rows = pack_documents([[1, 2, 3], [4, 5], [6]], eos_id=0, row_len=4)
    assert rows.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6]]  # the final EOS is the dropped tail


def test_batch_order_is_a_function_of_seed_and_index():
    a = [batch_rows(10, 3, i, seed=1).tolist() for i in range(9)]
    b = [batch_rows(10, 3, i, seed=1).tolist() for i in range(9)]
    assert a == b
    assert a != [batch_rows(10, 3, i, seed=2).tolist() for i in range(9)]
    epoch0 = sum(a[:3], [])
    assert len(set(epoch0)) == 9  # within an epoch rows are not repeated
    assert a[3:6] != a[:3]  # each epoch reshuffles


def test_stdlib_split_is_by_file_and_deterministic():
    src = StdlibSource(max_files=100)
    files = src.files()
    assert len(files) == 100
    assert len(src.documents("val")) == 5 and len(src.documents("train")) == 95
    assert src.documents("val")[0] == files[0].read_text(errors="replace")
    assert StdlibSource(max_files=100).fingerprint() == src.fingerprint()


def test_full_stdlib_corpus_matches_env_facts():
    files = StdlibSource().files()
    assert 600 < len(files) < 800  # ENV.md: ~670 files, ~11 MB


def test_files_source_jsonl_parquet_txt(tmp_path):
    docs = [f"document number {i}\nwith two lines" for i in range(40)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    pq.write_table(pa.table({"body": docs}), tmp_path / "a.parquet")
    (tmp_path / "a.txt").write_text("".join(d.replace("\n", " ") + "\n" for d in docs))
    for name in ("a.jsonl", "a.parquet"):
        src = FilesSource(paths=[str(tmp_path / name)], text_field="body", val_every=10)
        assert src.documents("val") == docs[::10]
        assert len(src.documents("train")) == 36
    txt = FilesSource(paths=str(tmp_path / "*.txt"))
    assert txt.documents("val")[0] == docs[0].replace("\n", " ")


def test_files_source_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        FilesSource(paths=[str(tmp_path / "missing.jsonl")])
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(UserError, match="text_field"):
        FilesSource(paths=[str(tmp_path / "a.jsonl")]).documents("train")


def test_hub_source_reads_a_local_folder_in_hub_layout(tmp_path):
    repo = tmp_path / "org__dataset"
    (repo / "data").mkdir(parents=True)
    docs = [f"hub document {i} " * 5 for i in range(60)]
    pq.write_table(pa.table({"text": docs[:50]}), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": docs[50:]}), repo / "data" / "validation-00000-of-00001.parquet")
    src = HubSource(path=str(repo), split="train", val_split="validation", max_documents=30)
    assert src.documents("train") == docs[:30]
    assert src.documents("val") == docs[50:]


def test_datamodule_batches_and_resume_position(tmp_path):
    docs = [f"doc {i} " * 20 for i in range(200)]

    class ListSource(StdlibSource):
        def _load(self):
            return docs[10:], docs[:10]

        def fingerprint(self):
            return "list"

    dm = PackedDataModule(ListSource(), ByteTokenizer(), seq_len=31, batch_size=4, seed=3, cache_dir=tmp_path)
    dm.setup()
    assert dm.train_rows.shape[1] == 32
    stream = iter(dm.train_dataloader())
    first = [next(stream)["tokens"] for _ in range(5)]
    dm.start_batch = 3  # what load_state_dict sets from a checkpoint
    resumed = iter(dm.train_dataloader())
    torch.testing.assert_close(next(resumed)["tokens"], first[3])
    # cached rows are reused and identical
    dm2 = PackedDataModule(
        ListSource(), ByteTokenizer(), seq_len=31, batch_size=4, seed=3, cache_dir=tmp_path
    )
    dm2.setup()
    torch.testing.assert_close(dm2.train_rows, dm.train_rows)


def test_datamodule_rejects_batch_that_does_not_fit(tmp_path):
    class Small(StdlibSource):
        def _load(self):
            return ["short text"] * 3, ["short"]

        def fingerprint(self):
            return "small"

    dm = PackedDataModule(Small(), ByteTokenizer(), seq_len=64, batch_size=8, cache_dir=None)
    with pytest.raises(UserError, match="data.batch_size"):
        dm.setup()


def test_ranks_read_disjoint_batches(tmp_path):
    """Under DDP rank r takes global batches r, r + w, ...: together the ranks read the 1-rank stream."""
    from types import SimpleNamespace

    docs = [f"doc {i} " * 20 for i in range(200)]

    class ListSource(StdlibSource):
        def _load(self):
            return docs[10:], docs[:10]

        def fingerprint(self):
            return "list-ddp"

    def stream(world, rank, n):
        dm = PackedDataModule(ListSource(), ByteTokenizer(), seq_len=15, batch_size=2, seed=5, cache_dir=None)
        dm.setup()
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        it = iter(dm.train_dataloader())
        return [next(it)["tokens"] for _ in range(n)]

    single = stream(1, 0, 6)
    rank0, rank1 = stream(2, 0, 3), stream(2, 1, 3)
    for k in range(3):
        torch.testing.assert_close(rank0[k], single[2 * k])
        torch.testing.assert_close(rank1[k], single[2 * k + 1])
