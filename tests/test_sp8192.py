"""Every path with the 8192-piece tokenizer the SP8192 records use: export, training, byte accounting, the n-gram
mixer, test-time training, packing (the 8192-row embedding), scoring an artifact alone, and the bench's vocabulary.
A tiny CPU run on the shipped sample; skipped where no sp8192 model is beside the repo."""
import dataclasses
import glob
import json
import os
import sys

import pytest
import sentencepiece as spm
import torch

import eval_ngram
import train_gpt
from conftest import REPO_ROOT, export_sample, tokenizer_model

sys.path.insert(0, os.path.join(REPO_ROOT, "records"))
import bench

TINY = ["num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32", "num_heads=4", "num_kv_heads=2", "enrich_hidden=32", "bigram_buckets=256",
        "bigram_dim=8", "seq_len=64", "train_batch_tokens=1024", "grad_accum_steps=1", "device=cpu", "compile=off",
        "compile_warmup_steps=0", "iterations=25", "max_wallclock_seconds=0", "warmup_steps=3", "log_every=5",
        "eval_stride=32", "eval_max_tokens=3000", "eval_chunk_tokens=1000", "eval_audit=8", "ngram_order=5",
        "ttt_steps=1", "train_holdout_tokens=2048"]


@pytest.fixture(scope="module")
def sp8192_model() -> str:
    return tokenizer_model("fineweb_8192_bpe.model",
                           "python data/fineweb.py --repo-id kevclark/parameter-golf --variant sp8192 --train-shards 0")


@pytest.fixture(scope="module")
def sp8192_shards(tmp_path_factory, sp8192_model) -> str:
    return export_sample(str(tmp_path_factory.mktemp("sp8192_shards")), sp8192_model)


def test_sp8192_preset_is_the_record_on_the_records_data_with_the_sp8192_stacks_grid_and_schedule():
    cfg, _ = train_gpt.resolve_config("sp8192")
    assert (cfg.vocab_size, cfg.data_dir, cfg.tokenizer) == (8192, "data/datasets/fineweb10B_sp8192",
                                                             "data/tokenizers/fineweb_8192_bpe.model")
    assert (cfg.quant_clip_sigmas, cfg.embed_clip_sigmas, cfg.gptq_tokens, cfg.recur_layers) == (12.85, 20.0, 262_144, "3,4,5")
    record = train_gpt.Config()
    differing = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(record, f.name)}
    assert differing == set(train_gpt.PRESETS["sp8192"])  # everything else is the record's


def test_the_same_text_counts_the_same_bytes_under_either_tokenizer(sp8192_shards, sp8192_model, sp1024_shards,
                                                                    sp1024_model):
    """bpb is per byte, so sp1024 and sp8192 scores compare only if both count every byte of the text once."""
    counted = {}
    for shards, model, vocab in ((sp1024_shards, sp1024_model, 1024), (sp8192_shards, sp8192_model, 8192)):
        tokens = eval_ngram.load_val_tokens(shards).long()
        tables = eval_ngram.byte_tables(model, vocab)
        counted[vocab] = int(eval_ngram.target_bytes(tokens[:-1], tokens[1:], tables).sum())
        sp = spm.SentencePieceProcessor(model_file=model)
        documents = [d for d in torch.tensor_split(tokens, (tokens == sp.bos_id()).nonzero().flatten()) if len(d) > 1]
        decoded = sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in documents)
        assert counted[vocab] == decoded, vocab
        assert int(tokens.max()) >= 1024 if vocab == 8192 else int(tokens.max()) < 1024
    assert counted[8192] == counted[1024]
    assert len(eval_ngram.load_val_tokens(sp8192_shards)) < 0.8 * len(eval_ngram.load_val_tokens(sp1024_shards))


def test_a_tiny_sp8192_run_trains_packs_and_scores_alike_in_the_trainer_and_alone(sp8192_shards, sp8192_model,
                                                                                   tmp_path, capsys):
    assert bench.vocab_of(sp8192_model) == 8192  # what bench rows are told to use

    assert train_gpt.main(["--preset", "sp8192", f"data_dir={sp8192_shards}", f"tokenizer={sp8192_model}",
                           f"records_dir={tmp_path / 'records'}", *TINY]) == 0
    out = capsys.readouterr().out
    assert "audit positions=" in out and out.count("PASS") >= 1
    [folder] = glob.glob(str(tmp_path / "records" / "track_10min_16mb" / "*"))
    with open(os.path.join(folder, "submission.json")) as f:
        submission = json.load(f)
    assert submission["preset"] == "sp8192" and submission["config"]["vocab_size"] == 8192
    assert 0 < submission["val_bpb"] < 20

    model, meta, tables, _ = eval_ngram.load_artifact(os.path.join(folder, "artifact.pgolf"))
    assert model.tok_emb.weight.shape == (8192, 32)  # the 8192-row embedding survives packing
    assert eval_ngram.main([os.path.join(folder, "artifact.pgolf"), "--max-tokens", "3000", "--audit", "8"]) == 0
    alone = capsys.readouterr().out.strip().splitlines()
    assert alone[-2].endswith("PASS")
    assert f"val_bpb={submission['val_bpb']:.6f}" in alone[-1]  # n-gram mixer + TTT, same score as in training
