"""Random bases: frozen orthogonal matrices regenerated from 8-byte seeds, bit for bit in any process, never packed;
only LoRA adapters, per-row scales and the other trained tensors reach the artifact."""
import hashlib
import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import eval_ngram
import train_gpt
from eval_ngram import UsageError, semi_orthogonal
from train_gpt import GPT, ConfigError, resolve_config
from artifacts import with_header

RECORD_SHAPES = [(512, 512), (256, 512), (1536, 512), (512, 1536)]  # q/proj, k/v, mlp fc, mlp proj of the record model
TINY = ["vocab_size=256", "tokenizer=bytes", "num_layers=2", "model_dim=64", "num_heads=4", "num_kv_heads=2",
        "bigram_buckets=128", "bigram_dim=16", "enrich_hidden=96", "seq_len=64", "eval_stride=32", "lora_rank=8"]


def tiny_model(random_bases: str = "mlp,attn") -> GPT:
    """A tiny model whose adapters and row scales hold random values, so packing them is not trivially exact."""
    cfg, _ = resolve_config("random_bases", TINY + [f"random_bases={random_bases}"])
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lora_b", "row_scale")):
                p.normal_(std=0.1)
    return model


@pytest.mark.parametrize("rows,cols", RECORD_SHAPES + [(48, 96), (768, 320)])
def test_bases_have_orthonormal_rows_or_columns(rows, cols):
    w = semi_orthogonal(rows, cols, seed=12345).double()
    gram = w @ w.T if rows <= cols else w.T @ w
    assert w.shape == (rows, cols)
    assert (gram - torch.eye(min(rows, cols), dtype=torch.float64)).abs().max() < 1e-6
    assert w.abs().max() < 8 / max(rows, cols) ** 0.5  # spread like a random matrix, no near-one-hot rows


def test_seeds_give_different_bases():
    a, b = semi_orthogonal(256, 512, seed=1), semi_orthogonal(256, 512, seed=2)
    assert (a * b).sum(1).abs().max() < 0.5  # rows of two seeds are nearly unrelated


def test_regeneration_is_bit_identical_in_a_fresh_process():
    """The child runs single-threaded (this process uses torch's default threads): the digest must still match."""
    code = (f"import sys, hashlib, torch; sys.path.insert(0, {REPO!r}); torch.set_num_threads(1); import eval_ngram; "
            f"print(hashlib.sha256(b''.join(eval_ngram.semi_orthogonal(r, c, 99).numpy().tobytes() "
            f"for r, c in {RECORD_SHAPES!r})).hexdigest())")
    here = hashlib.sha256(b"".join(semi_orthogonal(r, c, 99).numpy().tobytes() for r, c in RECORD_SHAPES)).hexdigest()
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == here


def test_unsupported_shapes_and_names_are_refused_with_a_usage_error():
    with pytest.raises(UsageError, match="larger side divisible by 16"):
        semi_orthogonal(24, 40, seed=0)
    with pytest.raises(ConfigError, match="name no Linear"):
        tiny_model("mlp,nosuch")


def test_training_moves_adapters_and_scales_never_bases():
    model = tiny_model()
    bases = {n: model.get_submodule(n).weight.clone() for n in model.basis_seeds}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n or "row_scale" in n}
    optimizers = train_gpt.build_optimizers(model, model.cfg, rank=0, world=1)
    trained = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    assert not any(id(model.get_submodule(n).weight) in trained for n in bases)
    x = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        model(x[:, :-1], x[:, 1:]).backward()
        for o in optimizers:
            o.step()
            o.zero_grad()
    assert all(torch.equal(model.get_submodule(n).weight, w) for n, w in bases.items())
    assert all(not torch.equal(p, adapters[n]) for n, p in model.named_parameters() if n in adapters)


def test_artifact_holds_seeds_adapters_scales_and_no_basis():
    model = tiny_model()
    blob = train_gpt.pack_model(model, model.cfg, {"train_time_s": 0.0})
    header = eval_ngram.read_header(blob)[0]
    names = {t["name"] for t in header["tensors"]}
    assert len(model.basis_seeds) == 12 and header["meta"]["basis_seeds"] == model.basis_seeds
    assert all(0 <= seed < 2**63 for seed in model.basis_seeds.values())  # 8 bytes each
    assert not any(n + ".weight" in names for n in model.basis_seeds)
    assert {n + suffix for n in model.basis_seeds for suffix in (".lora_a", ".lora_b", ".row_scale")} <= names
    frozen_weights = model.frozen_weights()
    line = eval_ngram.artifact_parts(model.state_dict(), train_gpt.quant_plan(model, model.cfg), model.basis_seeds, frozen_weights)
    parts = dict(re.findall(r"(\w+)=(\d+)", line))
    assert int(parts["adapters"]) + int(parts["row_scales"]) + int(parts["other"]) == header["payload_raw"]
    assert parts["frozen_bases"] == "0"
    dense = GPT(resolve_config("random_bases", TINY + ["random_bases="])[0])
    dense_raw = eval_ngram.read_header(train_gpt.pack_model(dense, dense.cfg, {"train_time_s": 0.0}))[0]["payload_raw"]
    assert header["payload_raw"] < dense_raw - frozen_weights  # the bases' bytes are gone, not just compressed


def test_pack_then_eval_in_a_new_process_gives_the_same_loss(tmp_path, byte_shards):
    model = tiny_model()
    path = tmp_path / "artifact.pgolf"
    path.write_bytes(train_gpt.pack_model(model, model.cfg, {"train_time_s": 0.0}))
    state, meta, tables = eval_ngram.unpack_artifact(path.read_bytes())
    loaded = train_gpt.model_from_artifact(state, meta).eval()
    val = eval_ngram.load_val_tokens(byte_shards)[:3000]
    here = eval_ngram.score(loaded, val, eval_ngram.byte_tables("bytes", 256), ngram_order=0, ttt_steps=0)
    child = subprocess.run([sys.executable, os.path.join(REPO, "eval_ngram.py"), str(path), "--data-dir", byte_shards,
                            "--no-ngram", "--ttt-steps", "0", "--max-tokens", "3000", "--device", "cpu"],
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert "sha256 matches training" in child.stderr
    assert f"val_loss={here['val_loss']:.6f}" in child.stdout


def test_a_changed_basis_is_refused_at_load():
    model = tiny_model()
    state, meta, _ = eval_ngram.unpack_artifact(train_gpt.pack_model(model, model.cfg, {"train_time_s": 0.0}))
    meta["basis_sha256"] = "0" * 64  # as if this code regenerated other matrices than the trainer had
    with pytest.raises(eval_ngram.ArtifactError, match="regenerated here differ"):
        train_gpt.model_from_artifact(state, meta)


def test_a_changed_basis_is_one_clear_error_line_from_the_command_line(tmp_path):
    # eval_ngram.py runs as __main__ and train_gpt imports eval_ngram: both must see one ArtifactError class
    blob = train_gpt.pack_model(tiny_model(), tiny_model().cfg, {"train_time_s": 0.0})
    path = tmp_path / "artifact.pgolf"
    path.write_bytes(with_header(blob, lambda header: header["meta"].__setitem__("basis_sha256", "0" * 64)))
    child = subprocess.run([sys.executable, os.path.join(REPO, "eval_ngram.py"), str(path), "--device", "cpu"],
                           capture_output=True, text=True)
    assert child.returncode == 2, child.stderr
    assert child.stderr.splitlines()[-1].startswith("error: random bases regenerated here differ")
