"""The byte-level preset: vocab 256 with id = UTF-8 byte value and 0 = BOS. It trains end to end on byte shards,
and its bpb is its per-token loss in bits, since every scored token but BOS is exactly one byte."""
import glob
import json
import lzma
import math
import os

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import eval_ngram
import train_gpt

SAMPLE = os.path.join(REPO_ROOT, "data", "sample", "gutenberg3_{}.txt.xz")


def text_bytes(split: str, n: int) -> list[int]:
    with lzma.open(SAMPLE.format(split)) as f:
        return [b for b in f.read(n) if b]


def test_bytes_preset_is_byte_level():
    cfg, _ = train_gpt.resolve_config("bytes")
    assert (cfg.vocab_size, cfg.tokenizer) == (256, "bytes")


def test_bytes_preset_trains_and_its_bpb_equals_its_loss_over_ln2(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    eval_ngram.write_shard(str(data / "text_train_000000.bin"), [0] + text_bytes("train", 40_000))
    eval_ngram.write_shard(str(data / "text_val_000000.bin"), [0] + text_bytes("val", 3_000))  # one BOS, at the start
    assert train_gpt.main(["--preset", "bytes", f"data_dir={data}", f"records_dir={tmp_path / 'records'}",
                           "seq_len=64", "train_batch_tokens=512", "grad_accum_steps=1", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32",
                           "num_heads=2", "num_kv_heads=1", "enrich_hidden=32", "bigram_buckets=256", "bigram_dim=8",
                           "iterations=30", "max_wallclock_seconds=0", "warmup_steps=3", "log_every=10",
                           "compile_warmup_steps=0", "eval_stride=32", "eval_audit=8", "device=cpu"]) == 0
    [folder] = glob.glob(str(tmp_path / "records" / "bytes" / "*"))
    with open(os.path.join(folder, "submission.json")) as f:
        submission = json.load(f)
    assert submission["config"]["vocab_size"] == 256 and submission["config"]["tokenizer"] == "bytes"
    assert submission["eval_budget_steps"] == [] and submission["config"]["eval_budget_s"] == 540.0  # a short eval: no step
    assert submission["val_bpb"] == pytest.approx(submission["val_loss"] / math.log(2), rel=1e-12)
    losses = [float(line.split("train_loss=")[1].split()[0]) for line in capsys.readouterr().out.splitlines()
              if line.startswith("step=")]
    assert losses[-1] < losses[0] - 1.0  # it learned something about English bytes (ln 256 = 5.55 at the start)


def test_byte_accounting_counts_every_byte_once_and_bos_as_none():
    """With a uniform model (ln 256 nats per token) the bpb is 8 bits x targets / bytes, and a BOS target adds no byte."""
    tokens = torch.tensor([0] + text_bytes("val", 500) + [0] + text_bytes("val", 300))
    uniform = lambda x: (torch.zeros(*x.shape, 256), {})
    result = eval_ngram.evaluate(uniform, tokens, eval_ngram.byte_tables("bytes", 256), seq_len=64, stride=16,
                                 batch_windows=16, chunk_tokens=65536)
    assert result["targets"] == tokens.numel() - 1 and result["bytes"] == tokens.numel() - 2  # one BOS target
    assert result["val_loss"] == pytest.approx(math.log(256), rel=1e-6)  # float32 logits
    assert result["val_bpb"] == pytest.approx(result["val_loss"] / math.log(2) * result["targets"] / result["bytes"], rel=1e-12)
