"""Packing capacity: late QAT trains through exactly the packer's rounding and switches on without recompiling,
Hessian-aware (GPTQ) rounding beats round-to-nearest on the layer's output, packed values unpack bit for bit, the
artifact's size adds up by hand, and a self-extracting record folder runs the same source in fewer counted bytes."""
import dataclasses
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import pytest
import torch
import torch.nn.functional as F

import eval_ngram
import train_gpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# model_dim 192 and MLP 3x: the MLP matrices (576 x 192) pass quant_plan's 65,536-weight threshold, attention does not
TINY = ["vocab_size=256", "tokenizer=bytes", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=192", "num_heads=4", "num_kv_heads=2",
        "bigram_buckets=0", "enrich_hidden=32", "seq_len=16", "eval_stride=16", "device=cpu", "compile=off"]


def tiny_model(*overrides: str) -> tuple[train_gpt.GPT, train_gpt.Config]:
    cfg, _ = train_gpt.resolve_config("record", TINY + list(overrides))
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    with torch.no_grad():  # zero-init projections would make rounding trivially exact
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, cfg


def correlated_problem(rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and inputs whose features are correlated and unequally scaled, as a trained layer's are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, cols, generator=g) @ (torch.randn(cols, cols, generator=g) / cols ** 0.5)
    return torch.randn(rows, cols, generator=g) * 0.03, x * torch.linspace(0.2, 3.0, cols)


# ---------------------------------------------------------------- QAT
@pytest.mark.parametrize("grid", ["quant_clip_sigmas=0", "quant_clip_sigmas=12.85"])  # absmax search, SDClip
def test_qat_forward_is_the_packers_rounding_with_a_straight_through_gradient(grid):
    model, cfg = tiny_model(grid)
    on = train_gpt.attach_qat(model, cfg)
    packed = train_gpt.packed_linears(model, cfg)
    assert set(packed) == {f"blocks.{i}.mlp.{m}.weight" for i in range(2) for m in ("fc", "proj")}
    unpacked = eval_ngram.unpack_artifact(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}))[0]
    for name, bits in packed.items():
        linear = model.get_submodule(name.removesuffix(".weight"))
        x_in = torch.randn(3, 5, linear.in_features)
        on.fill_(0.0)
        assert torch.equal(linear(x_in), F.linear(x_in, linear.weight))  # off: the weight itself
        on.fill_(1.0)
        assert torch.equal(linear(x_in), F.linear(x_in, unpacked[name]))  # on: exactly what the artifact holds
        assert not torch.equal(unpacked[name], linear.weight)
        linear.weight.grad = None
        linear(x_in).sum().backward()
        assert torch.allclose(linear.weight.grad, torch.ones(3 * 5, linear.out_features).T @ x_in.reshape(-1, linear.in_features))


def test_switching_qat_on_does_not_recompile():
    from torch._dynamo.testing import CompileCounter
    model, cfg = tiny_model()
    on = train_gpt.attach_qat(model, cfg)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    idx = torch.randint(0, 256, (2, 16))
    torch._dynamo.reset()
    off_loss = compiled(idx, idx)
    frames = counter.frame_count
    on.fill_(1.0)
    on_loss = compiled(idx, idx)
    assert counter.frame_count == frames and frames > 0
    assert on_loss != off_loss and torch.equal(on_loss, model(idx, idx))


# ---------------------------------------------------------------- GPTQ
@pytest.mark.parametrize("sigmas", [0.0, 12.85])
def test_hessian_rounding_lowers_the_output_error_of_round_to_nearest_on_the_same_grid(sigmas):
    w, x = correlated_problem(96, 128)
    hessian = x.T @ x / len(x)
    for bits in (6, 4):
        q_rtn, scale_rtn = eval_ngram.quantize_rows(w, bits, sigmas)
        q, scale = eval_ngram.gptq_rows(w, hessian, bits, sigmas)
        assert torch.equal(scale, scale_rtn) and q.abs().max() <= 2 ** (bits - 1) - 1  # same grid, same format
        out_error = lambda q_, s_: (x @ (w - q_.float() * s_.float()[:, None]).T).norm()
        assert out_error(q, scale) < 0.75 * out_error(q_rtn, scale_rtn)


def test_a_grid_of_row_sigmas_trades_rounding_error_for_bytes():
    """SDClip: the step is sigmas row RMS (a zero-mean row's std) over the largest level, so at the same int6 storage a
    Gaussian row (step 0.41 sigma at 12.85) codes in ~3.4 bits per weight against ~5.4 for the absmax grid."""
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0)) * 0.02
    coded = {}
    for sigmas in (0.0, 12.85):
        q, scale = eval_ngram.quantize_rows(w, 6, sigmas)
        coded[sigmas] = len(eval_ngram.compress_stream(q.numpy().tobytes())[1]) / w.numel()
        error = (q.float() * scale.float()[:, None] - w).square().mean() / w.square().mean()
        assert q.abs().max() <= 31 and error < (0.02 if sigmas else 0.002)
    step = eval_ngram.quantize_rows(w, 6, 12.85)[1].float() / w.square().mean(dim=1).sqrt()
    assert torch.allclose(step, torch.full_like(step, 12.85 / 31), rtol=1e-3)
    offset = torch.full((2, 1024), 0.01)  # a constant row is within half a step (a std-based scale would collapse it)
    q, scale = eval_ngram.quantize_rows(offset, 6, 12.85)
    assert ((q.float() * scale.float()[:, None] - offset).abs() <= scale.float()[:, None] / 2).all()
    assert coded[12.85] < 0.45 < 0.6 < coded[0.0]


def test_a_hessian_that_will_not_factor_is_a_clear_error():
    with pytest.raises(eval_ngram.ArtifactError, match="will not factor"):
        eval_ngram.gptq_rows(torch.randn(4, 3), torch.full((3, 3), float("nan")), 6)


def test_hessians_are_the_mean_outer_product_of_each_linears_inputs():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False)

        def forward(self, x, y):
            return self.b(self.a(x)).sum()
    toy, xs = Toy(), [torch.randn(5, 4), torch.randn(7, 4)]
    hessians = eval_ngram.collect_hessians(toy, [(x, None) for x in xs], ["a.weight", "b.weight"], "cpu")
    x = torch.cat(xs)
    assert torch.allclose(hessians["a.weight"], x.T @ x / 12)
    with torch.no_grad():
        h = toy.a(x)
    assert torch.allclose(hessians["b.weight"], h.T @ h / 12, atol=1e-6)
    assert not toy.a._forward_pre_hooks  # the hooks are gone afterwards


def test_no_weight_to_calibrate_draws_no_calibration_batch():
    def batches():
        raise AssertionError("a calibration batch was drawn")
        yield
    assert eval_ngram.collect_hessians(torch.nn.Linear(2, 2), batches(), [], "cpu") == {}


# ---------------------------------------------------------------- artifact
@pytest.mark.parametrize("grid", ["quant_clip_sigmas=0", "quant_clip_sigmas=12.85"])
def test_gptq_packed_values_unpack_bit_for_bit(grid):
    model, cfg = tiny_model(grid)
    names = list(train_gpt.packed_linears(model, cfg))
    hessians = {}
    for i, name in enumerate(names):
        x = correlated_problem(1, model.get_submodule(name.removesuffix(".weight")).in_features, seed=i)[1]
        hessians[name] = x.T @ x / len(x)
    state = eval_ngram.unpack_artifact(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}, None, hessians))[0]
    for name, bits in train_gpt.packed_linears(model, cfg).items():
        q, scale = eval_ngram.gptq_rows(model.state_dict()[name], hessians[name], bits, cfg.quant_clip_sigmas)
        assert torch.equal(state[name], q.float() * scale.float()[:, None])


def test_gptq_calibration_is_training_time_inside_the_budget(byte_shards, tmp_path, monkeypatch):
    """Calibration reads training tokens, so the loop stops gptq_reserve_s early and the calibration (made slow
    here) is counted in train_time_s, as the public record that reserves time for it counts it."""
    real = train_gpt.calibration_hessians

    def slow_calibration(*args):
        time.sleep(1.0)
        return real(*args)
    monkeypatch.setattr(train_gpt, "calibration_hessians", slow_calibration)
    records = tmp_path / "records"
    assert train_gpt.main(["--preset", "smoke", *TINY, f"data_dir={byte_shards}", f"records_dir={records}", "run_name=g",
                           "max_wallclock_seconds=4.5", "gptq_tokens=256", "gptq_reserve_s=3", "log_every=1",
                           "eval_max_tokens=512", "ttt_steps=0"]) == 0
    folder = next(records.glob("*/*_g"))
    log = (folder / "train_seed1337.log").read_text()
    last_step_elapsed = float(re.findall(r"^step=.* elapsed_s=(\S+)", log, re.M)[-1])
    assert last_step_elapsed < 3.0  # the loop's budget is 4.5 - 3 = 1.5 s (plus one step)
    assert json.loads((folder / "submission.json").read_text())["train_time_s"] >= last_step_elapsed + 1.0
    assert re.search(r"^gptq calibration tokens_per_rank=256 seconds=1\.\d+ \(in train_time_s\)$", log, re.M)


# ---------------------------------------------------------------- packing loss
def test_packing_loss_compares_the_float_weights_with_the_packed_ones_on_held_out_training_text(byte_shards):
    model, cfg = tiny_model(f"data_dir={byte_shards}", "train_holdout_tokens=512")
    holdout = torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(0))
    measure = lambda trained, packed: train_gpt.packing_loss(trained, packed, holdout, cfg, eval_ngram.byte_tables("bytes", 256),
                                                            0, 1, torch.device("cpu"), lambda line: None)
    same = measure(model, model)
    assert same["loss"] == 0.0 and same["holdout_tokens"] == 512
    unpacked = eval_ngram.unpack_artifact(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}))[0]
    packed, _ = tiny_model()
    packed.load_state_dict(unpacked)
    rounded = measure(model, packed)
    assert rounded["bpb_trained"] == same["bpb_trained"] and rounded["bpb_packed"] != same["bpb_packed"]
    train_gpt.attach_qat(model, cfg).fill_(1.0)  # a run that ended in QAT: its float weights are measured, not the grid
    assert measure(model, packed)["bpb_trained"] == same["bpb_trained"]


def test_a_run_measures_its_packing_loss_on_the_tokens_it_held_out(byte_shards, tmp_path, monkeypatch):
    seen = []
    measure = train_gpt.packing_loss
    monkeypatch.setattr(train_gpt, "packing_loss", lambda trained, packed, holdout, *rest: seen.append(holdout) or measure(
        trained, packed, holdout, *rest))
    assert train_gpt.main(["--preset", "smoke", *TINY, f"data_dir={byte_shards}", f"records_dir={tmp_path}", "iterations=2",
                           "max_wallclock_seconds=0", "eval_max_tokens=256", "ttt_steps=0", "train_holdout_tokens=300"]) == 0
    assert len(seen) == 1 and seen[0].equal(eval_ngram.holdout_tokens(byte_shards, 300, 256))  # never validation tokens
    submission = json.loads(next(tmp_path.glob("*/*/submission.json")).read_text())
    assert submission["packing_loss"]["holdout_tokens"] == 300


def measure_packing_loss(rank, world, data_dir, out):
    """packing_loss of a tiny model against its own artifact on one of `world` ranks; rank 0 writes the result."""
    model, cfg = tiny_model(f"data_dir={data_dir}", "train_holdout_tokens=1024")
    packed, _ = tiny_model()
    packed.load_state_dict(eval_ngram.unpack_artifact(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}))[0])
    evaluate, worlds = eval_ngram.evaluate, []
    eval_ngram.evaluate = lambda *args, **kwargs: worlds.append(kwargs["world"]) or evaluate(*args, **kwargs)
    holdout = eval_ngram.holdout_tokens(data_dir, 1024, 256)
    result = train_gpt.packing_loss(model, packed, holdout, cfg, eval_ngram.byte_tables("bytes", 256), rank, world,
                                    torch.device("cpu"), lambda line: None)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({**result, "worlds": worlds}, f)


def test_two_ranks_measure_the_same_packing_loss_as_one(byte_shards, tmp_path):
    from distributed import spawn_gloo
    measure_packing_loss(0, 1, byte_shards, str(tmp_path / "one.json"))
    spawn_gloo(measure_packing_loss, 2, tmp_path, byte_shards, str(tmp_path / "two.json"))
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one["holdout_tokens"] == two["holdout_tokens"] == 1024 and one["loss"] != 0
    assert one["worlds"] == [1, 1] and two["worlds"] == [2, 2]  # each rank scored its share of the windows
    for key in ("bpb_trained", "bpb_packed"):  # windows split over ranks, sums all-reduced: only batch shapes differ
        assert abs(one[key] - two[key]) < 1e-5, key


def test_the_artifact_size_adds_up_by_hand():
    state = {"m": torch.randn(70, 1000), "v": torch.randn(9)}
    blob = eval_ngram.pack_artifact(state, {"k": 1}, {"m": 5})
    header, payload_at = eval_ngram.read_header(blob)
    header_len = struct.unpack("<I", blob[6:10])[0]
    assert payload_at == 10 + header_len and header_len < len(json.dumps(header))  # the header is stored LZMA'd
    # the levels section (int8 levels), then the side section (one fp16 scale per row, then the fp16 vector)
    assert header["payload_raw"] == 70 * 1000 + 2 * 70 + 2 * 9
    assert [(t["offset"], t["nbytes"]) for t in header["tensors"]] == [(0, 70 * 1000), (70 * 1000 + 2 * 70, 2 * 9)]
    assert header["tensors"][0]["scale_offset"] == 70 * 1000
    assert len(blob) == payload_at + sum(n for _, n in header["payload_streams"])
    q, scale = eval_ngram.quantize_rows(state["m"], 5)
    levels, side = q.numpy().tobytes(), scale.numpy().tobytes() + state["v"].half().numpy().tobytes()
    huffman = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    side_codec, side_stream = eval_ngram.compress_stream(side)
    assert header["payload_streams"] == [["huffman", len(huffman.compress(levels) + huffman.flush())],
                                         [side_codec, len(side_stream)]]
    assert header["payload_streams"][0][1] < 0.98 * len(lzma.compress(levels, preset=9))  # the Huffman stage wins


def test_an_artifact_of_an_older_format_names_its_format_and_what_to_use():
    text = json.dumps({"format": 3, "meta": {}}).encode()
    with pytest.raises(eval_ngram.ArtifactError, match="artifact format 3 is not 4: older code packed it"):
        eval_ngram.unpack_artifact(eval_ngram.ARTIFACT_MAGIC + struct.pack("<I", len(text)) + text)


def test_each_stream_keeps_the_smaller_codec_and_unpacks_exactly():
    levels = torch.randint(-15, 16, (300, 1000), generator=torch.Generator().manual_seed(0)).to(torch.int8)
    repeats = torch.zeros(300, 1000).half()  # fp16 zeros: LZMA's matching wins
    for data, codec in [(levels.numpy().tobytes(), "huffman"), (repeats.numpy().tobytes(), "lzma")]:
        chosen, packed = eval_ngram.compress_stream(data)
        assert chosen == codec and eval_ngram.decompress_stream(chosen, packed, len(data) + 1) == data
        with pytest.raises(eval_ngram.ArtifactError, match="payload"):
            eval_ngram.decompress_stream(chosen, packed[:-3], len(data) + 1)


# ---------------------------------------------------------------- code bytes
def test_a_self_extracting_record_folder_runs_the_same_source_in_fewer_counted_bytes(tmp_path):
    for path in eval_ngram.CODE_FILES:
        (tmp_path / os.path.basename(path)).write_bytes(eval_ngram.self_extracting(eval_ngram.script_source(path)))
        assert eval_ngram.script_source(str(tmp_path / os.path.basename(path))) == open(path, "rb").read()
    copies = [str(tmp_path / os.path.basename(p)) for p in eval_ngram.CODE_FILES]
    assert eval_ngram.code_size(True) == sum(os.path.getsize(p) for p in copies) < 0.45 * eval_ngram.code_size()
    assert eval_ngram.files_sha256(copies) == eval_ngram.files_sha256(eval_ngram.CODE_FILES)  # no mismatch warning
    args = ["--print-config", "--preset", "smoke", "num_layers=3", "value_embed_layers=2"]
    runs = [subprocess.run([sys.executable, os.path.join(folder, "train_gpt.py"), *args], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout for folder in (str(tmp_path), REPO)]
    assert runs[0] == runs[1] and '"num_layers": 3' in runs[0]
    error = subprocess.run([sys.executable, str(tmp_path / "eval_ngram.py"), str(tmp_path / "none.pgolf")],
                           capture_output=True, text=True)
    assert error.returncode == 2 and "cannot read artifact" in error.stderr  # the evaluator runs from its copy too


def test_an_artifact_over_the_cap_is_repacked_one_grid_one_bit_narrower_at_a_time(monkeypatch):
    """attn 6 / MLP 5 over the cap: attention drops to 5 first (the wider grid), then the MLP (more weights on a tie),
    until it fits; a cap nothing fits under ends at 4 / 4, and without quant_fit nothing is repacked."""
    cfg = train_gpt.resolve_config("smoke", ["device=cpu", "model_dim=384", "mlp_mult=2", "num_layers=2", "recur_layers=", "value_embed_layers=1",
                                             "parallel_start=0", "quant_bits=6", "mlp_quant_bits=5"])[0]
    model, facts, lines = train_gpt.GPT(cfg), {"train_time_s": 0.0}, []
    sizes = {}
    for attn, mlp in ((6, 5), (5, 5), (5, 4), (4, 4)):
        sizes[attn, mlp] = len(train_gpt.pack_model(model, dataclasses.replace(cfg, quant_bits=attn, mlp_quant_bits=mlp), facts))
    assert sizes[6, 5] > sizes[5, 5] > sizes[5, 4] > sizes[4, 4]
    monkeypatch.setattr(eval_ngram, "ARTIFACT_LIMIT", sizes[5, 4] + 100)
    fitted, blob = train_gpt.pack_within_cap(model, cfg, facts, {}, None, 100, lines.append)
    assert (fitted.quant_bits, fitted.mlp_quant_bits, len(blob)) == (5, 4, sizes[5, 4])
    assert [line.split(": ")[1] for line in lines] == ["repacking attention one bit lower", "repacking MLP one bit lower"]
    monkeypatch.setattr(eval_ngram, "ARTIFACT_LIMIT", 1000)
    assert train_gpt.pack_within_cap(model, cfg, facts, {}, None, 100, lines.append)[0].quant_bits == 4
    off = dataclasses.replace(cfg, quant_fit=False)
    assert train_gpt.pack_within_cap(model, off, facts, {}, None, 100, lines.append)[0] is off
