"""data/export.py: real text in, challenge shards out. Documents start with BOS and decode back to the text,
the val split is deterministic, and bad input ends with one clear error line."""
import filecmp
import json
import lzma
import os

import numpy as np
import pytest

from data import export
import eval_ngram
from eval_ngram import find_shards, read_shard

DOCS = ["The quick brown fox jumps over the lazy dog.",
        "Café crème, 42 naïve cañons and a ✓ mark.",
        "A third document, short."]


def write_corpus(path, docs, compress=False):
    text = "\n\n".join(docs) + "\n"
    with (lzma.open(path, "wt", encoding="utf-8") if compress else open(path, "w", encoding="utf-8")) as f:
        f.write(text)
    return str(path)


def split_at_bos(tokens, bos):
    starts = list(np.flatnonzero(tokens == bos)) + [tokens.size]
    assert starts[0] == 0, "the shard must start with BOS"
    return [tokens[a + 1:b] for a, b in zip(starts, starts[1:])]


def run_cli(args):
    """export.main as the command line runs it; returns the error line it prints (None on success)."""
    try:
        export.main([str(a) for a in args])
    except Exception as error:
        return eval_ngram.error_line(error) or pytest.fail(f"not a user error: {error!r}")
    return None


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content, message", [
    (b"", "no text in it"),
    (b"\n\n\n\n", "no text in it"),
    (b"good text\n\nbad \xff byte\n", "not UTF-8 text (byte 0xff at offset 15)"),
])
def test_refuses_empty_and_non_utf8_input_with_one_clear_line(tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    error = run_cli([bad, "--tokenizer", "bytes", "--out", tmp_path / "out"])
    assert isinstance(error, str) and error.startswith("error: ") and "\n" not in error
    assert str(bad) in error and message in error
    assert not (tmp_path / "out" / "export.json").exists()


def test_refuses_a_broken_xz_file_and_a_missing_tokenizer(tmp_path):
    broken = tmp_path / "broken.txt.xz"
    broken.write_bytes(b"definitely not xz")
    assert "not a valid .xz file" in run_cli([broken, "--tokenizer", "bytes", "--out", tmp_path / "out"])
    text = write_corpus(tmp_path / "ok.txt", DOCS)
    error = run_cli([text, "--tokenizer", tmp_path / "missing.model", "--out", tmp_path / "out"])
    assert "tokenizer model not found" in error


# ---------------------------------------------------------------- what the shards hold


def test_sentencepiece_shards_decode_back_and_every_document_starts_with_bos(tmp_path, sp1024_model):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp1024_model)
    train = write_corpus(tmp_path / "docs_train.txt.xz", DOCS, compress=True)
    val = write_corpus(tmp_path / "docs_val.txt", ["Validation text stays apart."])
    assert run_cli([train, "--val-files", val, "--tokenizer", sp1024_model, "--out", tmp_path / "out"]) is None

    train_tokens = read_shard(str(tmp_path / "out" / "fineweb_train_000000.bin"))
    assert [sp.decode(doc.tolist()) for doc in split_at_bos(train_tokens, sp.bos_id())] == DOCS
    val_tokens = read_shard(str(tmp_path / "out" / "fineweb_val_000000.bin"))
    assert [sp.decode(doc.tolist()) for doc in split_at_bos(val_tokens, 1)] == ["Validation text stays apart."]
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert (info["vocab_size"], info["bos_id"], info["val_split"]) == (1024, 1, "val files")
    assert info["train"]["docs"] == 3 and info["train"]["tokens"] == train_tokens.size


def test_bytes_mode_is_utf8_bytes_after_bos_zero_and_drops_nul(tmp_path):
    docs = DOCS + ["nul\x00byte"]
    text = write_corpus(tmp_path / "t.txt", docs)
    assert run_cli([text, "--val-fraction", "0.5", "--tokenizer", "bytes", "--out", tmp_path / "out"]) is None
    tokens = np.concatenate([read_shard(p) for p in find_shards(str(tmp_path / "out"), "train")] +
                            [read_shard(p) for p in find_shards(str(tmp_path / "out"), "val")])
    decoded = [bytes(doc.astype(np.uint8)).decode("utf-8") for doc in split_at_bos(tokens, 0)]
    assert sorted(decoded) == sorted(d.replace("\x00", "") for d in docs)
    assert tokens.max() <= 255 and json.loads((tmp_path / "out" / "export.json").read_text())["vocab_size"] == 256


def test_long_input_is_cut_into_fixed_size_shards_that_concatenate_to_the_whole(tmp_path):
    text = write_corpus(tmp_path / "t.txt", [f"document number {i} " * 20 for i in range(30)])
    out = tmp_path / "out"
    assert run_cli([text, "--tokenizer", "bytes", "--out", out, "--shard-tokens", "1000"]) is None
    shards = find_shards(str(out), "train")
    sizes = [read_shard(p).size for p in shards]
    assert len(shards) > 3 and set(sizes[:-1]) == {1000} and 0 < sizes[-1] <= 1000
    assert sum(sizes) == json.loads((out / "export.json").read_text())["train"]["tokens"]


# ---------------------------------------------------------------- val split and bounded slices


def test_val_fraction_takes_every_kth_document_the_same_way_every_time(tmp_path):
    text = write_corpus(tmp_path / "t.txt", [f"doc {i}" for i in range(40)])
    for out in ("a", "b"):
        assert run_cli([text, "--val-fraction", "0.1", "--tokenizer", "bytes", "--out", tmp_path / out]) is None
    val = read_shard(str(tmp_path / "a" / "fineweb_val_000000.bin"))
    assert [bytes(d.astype(np.uint8)).decode() for d in split_at_bos(val, 0)] == ["doc 9", "doc 19", "doc 29", "doc 39"]
    for name in ("fineweb_train_000000.bin", "fineweb_val_000000.bin"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False)


def train_docs(out):
    tokens = np.concatenate([read_shard(p) for p in find_shards(str(out), "train")])
    return [bytes(d.astype(np.uint8)).decode() for d in split_at_bos(tokens, 0)]


def test_shuffle_train_mixes_the_files_documents_by_its_seed_and_leaves_the_val_split_alone(tmp_path):
    first = write_corpus(tmp_path / "a.txt", [f"a{i}" for i in range(20)])
    second = write_corpus(tmp_path / "b.txt", [f"b{i}" for i in range(20)])
    runs = {"plain": [], "s1": ["--shuffle-train", "1"], "s1_again": ["--shuffle-train", "1"], "s2": ["--shuffle-train", "2"]}
    for out, extra in runs.items():
        assert run_cli([first, second, "--val-fraction", "0.1", "--tokenizer", "bytes", "--out", tmp_path / out, *extra]) is None
    plain, shuffled = train_docs(tmp_path / "plain"), train_docs(tmp_path / "s1")
    assert plain == [f"a{i}" for i in range(20) if i % 10 != 9] + [f"b{i}" for i in range(20) if i % 10 != 9]
    assert sorted(shuffled) == sorted(plain) and shuffled != plain
    assert any(doc.startswith("b") for doc in shuffled[:len(shuffled) // 2])  # the second file reaches the first half
    assert shuffled == train_docs(tmp_path / "s1_again") != train_docs(tmp_path / "s2")
    assert filecmp.cmp(tmp_path / "plain" / "fineweb_val_000000.bin", tmp_path / "s1" / "fineweb_val_000000.bin", shallow=False)
    orders = [json.loads((tmp_path / out / "export.json").read_text())["train_order"] for out in ("plain", "s1")]
    assert orders == ["input order", "documents shuffled with seed 1"]
    assert run_cli([first, "--tokenizer", "bytes", "--out", tmp_path / "x", "--shuffle-train", "-1"]).startswith("error:")


def test_an_ordered_tail_stays_out_of_the_shuffle_in_input_order_at_the_end(tmp_path):
    first = write_corpus(tmp_path / "a.txt", [f"a{i}" for i in range(20)])
    second = write_corpus(tmp_path / "b.txt", [f"b{i:02d}" for i in range(20)])  # 4 tokens each with BOS
    common = [first, second, "--val-fraction", "0.1", "--tokenizer", "bytes", "--shuffle-train", "1"]
    assert run_cli([*common, "--out", tmp_path / "tail", "--ordered-tail", "10"]) is None
    docs = train_docs(tmp_path / "tail")
    in_order = [f"a{i}" for i in range(20) if i % 10 != 9] + [f"b{i:02d}" for i in range(20) if i % 10 != 9]
    assert docs[-3:] == ["b16", "b17", "b18"]  # b19 went to val; 3 documents of 4 tokens reach 10 tokens
    assert sorted(docs[:-3]) == sorted(in_order[:-3]) and docs[:-3] != in_order[:-3]  # the rest: every other document, shuffled
    order = json.loads((tmp_path / "tail" / "export.json").read_text())["train_order"]
    assert order == "documents shuffled with seed 1, then the last 10+ tokens' documents in input order"
    assert run_cli([*common, "--out", tmp_path / "x", "--ordered-tail", "1000"]).startswith("error: --ordered-tail 1,000: the training documents hold only")
    assert run_cli([first, "--tokenizer", "bytes", "--out", tmp_path / "x", "--ordered-tail", "10"]).startswith("error: --ordered-tail keeps a tail")


def test_max_bytes_reads_whole_documents_only_and_too_little_text_for_val_is_an_error(tmp_path):
    docs = ["first doc", "second doc", "third doc that the limit cuts"]
    text = write_corpus(tmp_path / "t.txt", docs)
    out = tmp_path / "out"
    assert run_cli([text, "--val-fraction", "0.5", "--tokenizer", "bytes", "--out", out, "--max-bytes", "30"]) is None
    info = json.loads((out / "export.json").read_text())
    assert info["train"]["docs"] + info["val"]["docs"] == 2
    error = run_cli([text, "--val-fraction", "0.5", "--tokenizer", "bytes", "--out", out, "--max-bytes", "12"])
    assert error.startswith("error: no val documents")


def test_rerun_replaces_old_shards_instead_of_mixing_them(tmp_path):
    out = tmp_path / "out"
    big = write_corpus(tmp_path / "big.txt", ["x" * 500] * 20)
    small = write_corpus(tmp_path / "small.txt", ["y" * 50] * 20)
    assert run_cli([big, "--tokenizer", "bytes", "--out", out, "--shard-tokens", "1000"]) is None
    assert run_cli([small, "--tokenizer", "bytes", "--out", out, "--shard-tokens", "1000"]) is None
    assert [os.path.basename(p) for p in find_shards(str(out), "train")] == ["fineweb_train_000000.bin"]


def test_session_fixture_shards_are_readable_by_the_trainer_loader(byte_shards):
    train, val = find_shards(byte_shards, "train"), find_shards(byte_shards, "val")
    assert len(train) == len(val) == 1
    assert read_shard(train[0])[0] == 0 and read_shard(val[0]).size > 10_000
