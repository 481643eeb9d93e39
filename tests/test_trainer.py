"""The trainer's contract: shards are validated, bytes are counted as the challenge counts them, config errors are
clear, Muon orthogonalizes, EMA and XSA do what they say, gradient accumulation and extra ranks leave the step
unchanged, and a packed artifact scores exactly like the model it was packed from."""
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import eval_ngram
import train_gpt
from distributed import spawn_gloo

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32", "num_heads=4", "num_kv_heads=2", "enrich_hidden=32", "bigram_buckets=64",
        "bigram_dim=8", "seq_len=32", "eval_stride=16", "train_batch_tokens=256", "device=cpu", "compile=off", "ema=false"]


def tiny_config(*overrides):
    return train_gpt.resolve_config("smoke", [*TINY, *overrides])[0]


# ---------------------------------------------------------------- shards
def test_a_valid_shard_round_trips(tmp_path):
    path = str(tmp_path / "x_train_000000.bin")
    eval_ngram.write_shard(path, np.array([1, 5, 65535]))
    assert eval_ngram.read_shard(path).tolist() == [1, 5, 65535]


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:100], "shorter than the 1024-byte shard header"),
    (lambda raw: b"\x00" * 4 + raw[4:], "not a shard"),
    (lambda raw: raw[:-2], "header says 3 tokens"),
])
def test_a_damaged_shard_is_an_error_naming_the_file(tmp_path, damage, message):
    path = str(tmp_path / "x_val_000000.bin")
    eval_ngram.write_shard(path, np.array([1, 2, 3]))
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(damage(raw))
    with pytest.raises(eval_ngram.DataError, match=message) as error:
        eval_ngram.read_shard(path)
    assert path in str(error.value)


def test_a_folder_without_shards_says_how_to_make_them(tmp_path):
    with pytest.raises(eval_ngram.DataError, match="data/export.py"):
        eval_ngram.find_shards(str(tmp_path), "train")


def numbered_train_shards(folder, lengths=(100, 60, 40)) -> int:
    """Train shards whose tokens are their positions in the split (0, 1, 2, ...), and a val shard that is no shard
    at all, so that reading it fails; returns the split's size."""
    start = 0
    for index, length in enumerate(lengths):
        eval_ngram.write_shard(str(folder / f"x_train_{index:06d}.bin"), np.arange(start, start + length))
        start += length
    (folder / "x_val_000000.bin").write_bytes(b"not a shard: the stream must never open it")
    return start


@pytest.mark.parametrize("holdout", [1, 30, 40, 75, 199])  # within the last shard, all of it, beyond it, all but one
def test_the_stream_never_yields_the_held_out_tail_which_holdout_tokens_returns(tmp_path, holdout):
    total = numbered_train_shards(tmp_path)
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, holdout)
    seen = np.concatenate([stream.take(37) for _ in range(30)])  # several epochs of the kept tokens
    assert stream.epoch >= 2 and set(seen.tolist()) == set(range(total - holdout))
    assert eval_ngram.holdout_tokens(str(tmp_path), holdout, 1000).tolist() == list(range(total - holdout, total))


def test_no_holdout_leaves_the_stream_as_it_was(tmp_path):
    total = numbered_train_shards(tmp_path)
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, 0)
    assert np.array_equal(np.concatenate([stream.take(37) for _ in range(30)]), np.arange(37 * 30) % total)


@pytest.mark.parametrize("holdout", [200, 500, -1])
def test_a_holdout_of_the_whole_training_split_is_a_clear_error(tmp_path, holdout):
    numbered_train_shards(tmp_path)
    with pytest.raises(eval_ngram.DataError, match=f"train_holdout_tokens={holdout} must be in 0..199"):
        eval_ngram.TrainStream(str(tmp_path), 1000, holdout)


def shuffled_rows(stream, steps, seq_len=8, rows=2, rank=0, world=1):
    """The (inputs, targets) rows a stream yields to one rank over some steps, as numpy arrays."""
    batches = [stream.next_batch(rows * seq_len, seq_len, rank, world, "cpu") for _ in range(steps)]
    return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])


def test_shuffled_order_visits_every_window_of_the_kept_split_once_per_epoch(tmp_path):
    numbered_train_shards(tmp_path)  # tokens are their positions: a row's first token says where it was cut
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, 30, "shuffled", window=8, seed=5)
    windows = [(100 - 1 - stream.phase) // 8, (60 - 1 - stream.phase) // 8, (10 - 1 - stream.phase) // 8]
    x, y = shuffled_rows(stream, sum(windows), rows=1)  # one epoch: a window per step
    assert stream.epoch == 0 and (y == x + 1).all()  # targets follow inputs, and no row crosses a shard boundary
    expected = [base + stream.phase + 8 * k for base, n in zip([0, 100, 160], windows) for k in range(n)]
    assert sorted(x[:, 0].tolist()) == expected and y.max() < 170  # each window once; the held-out tail 170..199 never
    assert x[:, 0].tolist() != expected  # in a random order, not in shard order
    shuffled_rows(stream, 1, rows=1)
    assert stream.epoch == 1  # the next epoch draws its own order


def test_shuffled_order_is_fixed_by_the_seed_and_differs_between_seeds(tmp_path):
    numbered_train_shards(tmp_path)
    first = [shuffled_rows(eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, seed), 4)[0] for seed in (1, 1, 2)]
    assert np.array_equal(first[0], first[1]) and not np.array_equal(first[0], first[2])


def test_shuffled_ranks_take_disjoint_rows_and_together_match_one_rank_with_accumulation(tmp_path):
    numbered_train_shards(tmp_path)
    one_rank = shuffled_rows(eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 3), 8, rows=1)[0]
    ranks = [eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 3) for _ in range(2)]
    per_step = [[s.next_batch(8, 8, r, 2, "cpu")[0].numpy() for r, s in enumerate(ranks)] for _ in range(4)]
    assert np.array_equal(np.concatenate([row for step in per_step for row in step]), one_rank)


def test_ranks_cut_shorter_sequences_from_one_shared_list_of_windows(tmp_path):
    numbered_train_shards(tmp_path)  # 3 rows of 4 tokens per rank, 2 per window: rank 1 starts inside a window
    one_rank = eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 6).next_batch(24, 4, 0, 1, "cpu")[0].numpy()
    ranks = [eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 6).next_batch(12, 4, r, 2, "cpu")[0].numpy()
             for r in range(2)]
    assert np.array_equal(np.concatenate(ranks), one_rank) and ranks[1][0, 0] == ranks[0][2, 0] + 4


def test_shorter_sequences_are_consecutive_pieces_of_a_window(tmp_path):
    numbered_train_shards(tmp_path)
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", window=8, seed=0)
    x, y = stream.next_batch(8, 4, 0, 1, "cpu")
    assert x[1, 0] == x[0, 0] + 4 and (y == x + 1).all()
    with pytest.raises(eval_ngram.UsageError, match="sequences of 16 tokens from a stream of 8-token windows"):
        stream.next_batch(16, 16, 0, 1, "cpu")


def test_a_shuffled_stream_restored_mid_epoch_or_across_one_continues_exactly(tmp_path):
    numbered_train_shards(tmp_path)
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 4)
    for steps in (3, 12):  # mid-epoch, then past the end of the first epoch (at most 23 windows, two per step)
        shuffled_rows(stream, steps)
        saved, expected = stream.state(), shuffled_rows(stream, 5)[0]
        resumed = eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 4)
        resumed.restore(saved)
        assert np.array_equal(shuffled_rows(resumed, 5)[0], expected)
    assert saved["epoch"] >= 1  # the second restore drew a later epoch's order
    with pytest.raises(eval_ngram.DataError, match="in shuffled order, not sequential: resume with the train_order"):
        eval_ngram.TrainStream(str(tmp_path), 1000).restore(saved)
    for window, seed in ((8, 5), (4, 4)):  # another seed or seq_len would draw other windows
        with pytest.raises(eval_ngram.DataError, match="8-token windows from seed 4, not .*: resume with the seq_len and seed"):
            eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", window, seed).restore(saved)
    with pytest.raises(eval_ngram.DataError, match="past the epoch's"):
        eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 4).restore({**saved, "cursor": 10_000})


def test_a_shuffled_stream_too_short_for_one_sequence_is_a_clear_error(tmp_path):
    numbered_train_shards(tmp_path, lengths=(20, 20))
    with pytest.raises(eval_ngram.DataError, match="none with 33: too few for one sequence of seq_len 32"):
        eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", window=32)


@pytest.mark.parametrize("damage, message", [
    (lambda path: os.truncate(path, os.path.getsize(path) - 150), "x_train_000000.bin: .*bytes"),  # cut mid-file
    (lambda path: eval_ngram.write_shard(path, np.arange(30)), "x_train_000000.bin: holds fewer tokens than when"),
])
def test_a_shard_cut_short_under_a_shuffled_stream_is_an_error_naming_it(tmp_path, damage, message):
    numbered_train_shards(tmp_path)
    stream = eval_ngram.TrainStream(str(tmp_path), 1000, 0, "shuffled", 8, 0)
    damage(str(tmp_path / "x_train_000000.bin"))
    with pytest.raises(eval_ngram.DataError, match=message):
        shuffled_rows(stream, 12)


def test_a_run_with_train_order_shuffled_trains_on_seq_len_windows_drawn_from_its_seed(byte_shards, tmp_path, monkeypatch):
    made, for_config = [], eval_ngram.TrainStream.for_config
    monkeypatch.setattr(eval_ngram.TrainStream, "for_config", classmethod(
        lambda cls, cfg, holdout_tokens=None: made.append(for_config(cfg, holdout_tokens)) or made[-1]))
    assert train_gpt.main(["--preset", "smoke", *TINY, "vocab_size=256", "tokenizer=bytes", f"data_dir={byte_shards}",
                           f"records_dir={tmp_path}", "iterations=3", "max_wallclock_seconds=0", "eval_max_tokens=256",
                           "ttt_steps=0", "train_order=shuffled", "seed=7", "gptq_tokens=0"]) == 0  # training draws only
    stream, = made
    assert (stream.order, stream.window, stream.seed, stream.epoch, stream.cursor) == ("shuffled", 32, 7, 0, 3 * 256 // 32)


# ---------------------------------------------------------------- bytes per token
def test_bytes_are_counted_as_the_challenge_counts_them(sp1024_model):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp1024_model)
    tables = eval_ngram.byte_tables(sp1024_model, 1024)

    def counted(text):
        ids = torch.tensor([sp.bos_id()] + sp.encode(text))
        return int(eval_ngram.target_bytes(ids[:-1], ids[1:], tables).sum())
    assert counted("hello world") == len("hello world")  # "▁world" after a word: its space is a byte
    assert counted("naïve café") == len("naïve café".encode())  # multi-byte characters count as their UTF-8 bytes
    the, a = sp.piece_to_id("\u2581the"), sp.piece_to_id("a")
    prev, target = torch.tensor([sp.bos_id(), a]), torch.tensor([the, the])
    assert eval_ngram.target_bytes(prev, target, tables).tolist() == [3, 4]  # "▁" after BOS (a boundary) is no byte


def test_byte_level_tokens_are_one_byte_and_bos_none():
    tables = eval_ngram.byte_tables("bytes", 256)
    ids = torch.tensor([0, 104, 105, 0, 33])
    assert eval_ngram.target_bytes(ids[:-1], ids[1:], tables).tolist() == [1, 1, 0, 1]


# ---------------------------------------------------------------- config
def test_overrides_are_typed_and_presets_apply():
    cfg, preset = train_gpt.resolve_config("smoke", ["num_layers=3", "value_embed_layers=", "matrix_lr=0.5", "ema=off", "run_name=x"])
    assert (preset, cfg.num_layers, cfg.matrix_lr, cfg.ema, cfg.run_name) == ("smoke", 3, 0.5, False, "x")
    assert train_gpt.resolve_config()[0] == train_gpt.Config()  # the plain command is the record preset


@pytest.mark.parametrize("args, message", [
    (["num_layer=3"], "unknown config key 'num_layer'; did you mean 'num_layers'"),
    (["num_layers=three"], "num_layers='three': expected a int"),
    (["ema=maybe"], "expected a bool"),
    (["num_layers"], "arguments are key=value"),
    (["recur_layers=4;5"], "recur_layers='4;5': needs block indices as in 4,5"),  # before any folder, not a ValueError
    (["recur_layers=4,6"], "needs consecutive block indices below num_layers"),
    (["recur_layers=10,11"], "needs consecutive block indices below num_layers"),  # record has 11 blocks: 0..10
    (["num_layers=4", "value_embed_layers=3"], "recur_layers='4,5' num_layers=4: needs consecutive"),  # the record's band needs its depth
    (["num_layers=9"], "value_embed_layers='9,10' num_layers=9 layer0_attention=False: needs distinct blocks that have attention"),
    (["recur_layers=4,5", "parallel_start=5"], "lanes never rejoin"),
])
def test_bad_overrides_are_clear_errors(args, message):
    with pytest.raises(train_gpt.ConfigError, match=message):
        train_gpt.resolve_config("record", args)


def test_the_global_batch_must_split_into_whole_sequences_on_every_rank_and_micro_step():
    cfg = train_gpt.resolve_config("smoke", ["grad_accum_steps=0"])[0]  # 4,096 tokens of 128-token sequences
    assert [train_gpt.accumulation_steps(cfg, world) for world in (1, 2, 8)] == [8, 4, 1]  # 8 // world micro-steps
    for batch, world in ((4000, 1), (4096, 3)):  # not whole sequences; 3 ranks x 2 micro-steps x 128 does not divide
        with pytest.raises(train_gpt.ConfigError, match=f"train_batch_tokens={batch} must split into {world} ranks"):
            train_gpt.accumulation_steps(dataclasses.replace(cfg, train_batch_tokens=batch), world)


def test_the_command_line_reports_errors_in_one_line():
    proc = subprocess.run([sys.executable, "train_gpt.py", "--preset", "nope"], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: unknown preset 'nope'; choose one of " + ", ".join(train_gpt.PRESETS)]


def test_help_lists_every_key_with_its_default():
    lines = train_gpt.help_text().split("config keys (key=value):\n", 1)[1].splitlines()
    fields = train_gpt.dataclasses.fields(train_gpt.Config)
    assert len(lines) == len(fields)
    for field, line in zip(fields, lines):
        name, rest = line.split(None, 1)
        shown = rest.removesuffix(field.metadata["help"]).strip()  # the column between the key and its meaning
        assert name == field.name and rest.endswith(field.metadata["help"]), line
        assert shown == str(field.default), line
        if shown:  # and it reads back as the default when given as key=value
            assert train_gpt.parse_value(field.type, name, shown) == field.default, line


# ---------------------------------------------------------------- model and optimizer pieces
def test_newton_schulz_makes_the_update_nearly_orthogonal():
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    singular = torch.linalg.svdvals(train_gpt.newton_schulz(g, 5))
    assert singular.min() > 0.5 and singular.max() < 1.3  # raw g's spread is ~3x; NS squeezes it around 1
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 3


def test_ema_warms_up_then_follows_its_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = train_gpt.EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(10.0)
    ema.update(model)  # decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.params[0], torch.full((1, 2), 9.0))
    for _ in range(20):
        ema.update(model)
    assert ema.current_decay() == 0.5


def test_xsa_output_has_no_component_along_the_heads_own_value():
    y, v = torch.randn(2, 5, 8, 16), torch.randn(2, 5, 4, 16)  # [B, T, H, D]: 8 query heads read 4 value heads
    out = train_gpt.exclusive_self_attention(y, v)
    own_value = v.repeat_interleave(2, dim=2)
    assert (out * own_value).sum(-1).abs().max() < 1e-5
    assert not torch.allclose(out, y)


def test_gradient_accumulation_gives_the_full_batch_gradient():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    x, y = torch.randint(0, 1024, (4, 32)), torch.randint(0, 1024, (4, 32))
    model(x, y).backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i in range(4):
        (model(x[i:i + 1], y[i:i + 1]) / 4).backward()
    for a, b in zip(full, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- one rank or two, same run
def train_a_few_steps(rank, world, data_dir, out, *overrides):
    torch.set_num_threads(1)
    cfg = tiny_config(f"data_dir={data_dir}", "iterations=3", "max_wallclock_seconds=0", "grad_accum_steps=" + str(2 // world),
                      "warmup_steps=1", *overrides)
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    stream = eval_ngram.TrainStream.for_config(cfg, holdout_tokens=0)  # shuffled windows, the default
    train_gpt.train(cfg, model, stream, lambda line: None, rank, world, torch.device("cpu"))
    if rank == 0:
        torch.save(model.state_dict(), out)


# untied second passes: parameters with no gradient until the recurrence starts (step 2 of 3), which DDP must allow
@pytest.mark.parametrize("overrides", [(), ("recur_untie=mlp", "recur_start=0.5")])
def test_two_gloo_ranks_train_like_one_with_accumulation(sp1024_shards, tmp_path, overrides):
    train_a_few_steps(0, 1, sp1024_shards, str(tmp_path / "one.pt"), *overrides)
    spawn_gloo(train_a_few_steps, 2, tmp_path, sp1024_shards, str(tmp_path / "two.pt"), *overrides)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    start = train_gpt.GPT(tiny_config(*overrides)).state_dict()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name  # only gradient summation order differs
    assert any(not torch.equal(one[n], start[n]) for n in one)  # and training did move the weights


CLOCK = [0.0, 1.0, 2.0, 3.0, 4.0, 14.0, 15.0, 16.0]  # seconds at each step; the sixth step took 10 s


def read_agreed_clock(rank, world, out):
    clock = eval_ngram.AgreedClock(world, torch.device("cpu"))
    readings = [clock(local + 0.5 * rank) for local in CLOCK]  # rank 1's clock runs 0.5 s ahead
    with open(f"{out}.{rank}", "w") as f:
        json.dump(readings, f)


def test_ranks_agree_on_the_clock_a_step_late_extrapolated_by_one_step(tmp_path):
    """Schedule and stop come from one time on all ranks (the max of their clocks); the all-reduce of a step is read at
    the next (no host sync per step on a GPU), plus the shorter of the last two steps, never going back: one slow step
    is not counted twice. One rank alone reads its own clock."""
    spawn_gloo(read_agreed_clock, 2, tmp_path, str(tmp_path / "clock"))
    readings = [json.load(open(tmp_path / f"clock.{rank}")) for rank in (0, 1)]
    assert readings[0] == readings[1] == [0.5, 0.5, 1.5, 3.5, 4.5, 5.5, 15.5, 16.5]
    assert eval_ngram.AgreedClock(1, torch.device("cpu"))(7.25) == 7.25


# ---------------------------------------------------------------- artifact
def test_pack_then_unpack_scores_exactly_like_the_packed_weights(sp1024_shards, sp1024_model, tmp_path):
    cfg = tiny_config(f"data_dir={sp1024_shards}", f"tokenizer={sp1024_model}")
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    blob = train_gpt.pack_model(model, cfg, {"train_time_s": 1.0})
    state, meta, _ = eval_ngram.unpack_artifact(blob)
    unpacked = train_gpt.model_from_artifact(state, meta).eval()
    val = eval_ngram.load_val_tokens(sp1024_shards)[:3000]
    tables = eval_ngram.byte_tables(sp1024_model, 1024)
    in_process = eval_ngram.score(unpacked, val, tables, eval_stride=16, ngram_order=0)["val_loss"]  # as the CLI below
    path = tmp_path / "a.pgolf"
    path.write_bytes(blob)
    proc = subprocess.run([sys.executable, "eval_ngram.py", str(path), "--no-ngram", "--stride", "16",
                           "--max-tokens", "3000"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert f"val_loss={in_process:.6f}" in proc.stdout.splitlines()[-1]
    audit = [line for line in proc.stdout.splitlines() if line.startswith("audit positions=")]  # unasked, as training did
    assert cfg.eval_audit > 0 and len(audit) == 1 and audit[0].endswith("PASS"), proc.stdout
    quantized = {n for n, p in model.state_dict().items() if not torch.equal(p, state[n])}
    assert quantized and all(torch.allclose(model.state_dict()[n], state[n], atol=0.02) for n in state)


def test_eval_seq_len_scores_with_longer_windows_than_training_in_process_and_from_the_command_line(
        sp1024_shards, sp1024_model, tmp_path, monkeypatch):
    cfg = tiny_config(f"data_dir={sp1024_shards}", f"tokenizer={sp1024_model}")  # seq_len 32
    torch.manual_seed(0)
    gpt = train_gpt.GPT(cfg)
    with torch.no_grad():  # weights far from the near-uniform init, so that what a token sees changes its score
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    blob = train_gpt.pack_model(gpt, cfg, {"train_time_s": 1.0})
    model = train_gpt.model_from_artifact(*eval_ngram.unpack_artifact(blob)[:2]).eval()
    val, tables = eval_ngram.load_val_tokens(sp1024_shards)[:1000], eval_ngram.byte_tables(sp1024_model, 1024)
    lengths, logits = [], eval_ngram.model_logits
    monkeypatch.setattr(eval_ngram, "model_logits", lambda m, x: lengths.append(x.size(1)) or logits(m, x))
    trained_length = eval_ngram.score(model, val, tables, eval_stride=16, ngram_order=0)
    longer = eval_ngram.score(model, val, tables, eval_stride=16, eval_seq_len=96, ngram_order=0)
    assert set(lengths) == {32, 96} and longer["val_loss"] != trained_length["val_loss"]
    (tmp_path / "a.pgolf").write_bytes(blob)
    proc = subprocess.run([sys.executable, "eval_ngram.py", str(tmp_path / "a.pgolf"), "--no-ngram", "--stride", "16",
                           "--seq-len", "96", "--max-tokens", "1000"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert f"val_loss={longer['val_loss']:.6f}" in proc.stdout.splitlines()[-1]
    with pytest.raises(eval_ngram.UsageError, match="--stride 16: must be in 1..8 "):
        eval_ngram.main([str(tmp_path / "a.pgolf"), "--seq-len", "8", "--no-ngram"])


def test_an_audit_over_the_tolerance_voids_the_score():
    lines = []
    audit = {"audit_count": 64, "audit_max_mismatch": 0.0, "val_bpb": 1.0, "val_loss": 1.0}
    eval_ngram.report_audit(audit | {"audit_max_err": 4e-16}, lines.append)
    with pytest.raises(eval_ngram.ArtifactError, match="normalization audit failed"):
        eval_ngram.report_audit(audit | {"audit_max_err": 2e-6}, lines.append)
    assert lines == ["audit positions=64 max_abs_sum_err=4.000e-16 max_nll_mismatch=0.000e+00 PASS",
                     "audit positions=64 max_abs_sum_err=2.000e-06 max_nll_mismatch=0.000e+00 FAIL"]


def test_the_size_check_fails_loudly_over_the_cap():
    assert eval_ngram.check_artifact_size(15_000_000, 1_000_000) == 16_000_000
    with pytest.raises(eval_ngram.ArtifactError, match="1 over the 16000000-byte cap"):
        eval_ngram.check_artifact_size(15_000_000, 1_000_001)


@pytest.mark.parametrize("damage, message", [(lambda b: b[:-10], "truncated"), (lambda b: b"XX" + b[2:], "bad magic"),
                                             (lambda b: b[:40], "header is truncated or corrupt")])
def test_a_damaged_artifact_is_one_clear_error_line(tmp_path, damage, message):
    cfg = tiny_config()
    blob = train_gpt.pack_model(train_gpt.GPT(cfg), cfg, {"train_time_s": 0.0})
    path = tmp_path / "bad.pgolf"
    path.write_bytes(damage(blob))
    proc = subprocess.run([sys.executable, "eval_ngram.py", str(path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("builder, message", [
    ("os:system", "expected one of"), ("eval_ngram:main", "expected one of"),
    ("train_gpt:no_such_builder", "has no no_such_builder"), (None, "names no model builder")])
def test_an_artifact_names_its_model_builder_in_this_checkout_or_is_refused(tmp_path, builder, message):
    cfg = tiny_config()
    meta = {"config": train_gpt.dataclasses.asdict(cfg)} | ({"model_builder": builder} if builder else {})
    path = tmp_path / "a.pgolf"
    path.write_bytes(eval_ngram.pack_artifact(train_gpt.GPT(cfg).state_dict(), meta, {}))
    with pytest.raises(eval_ngram.ArtifactError, match=message):
        eval_ngram.load_artifact(str(path))
    meta["model_builder"] = "train_gpt:model_from_artifact"  # what pack_model records
    path.write_bytes(eval_ngram.pack_artifact(train_gpt.GPT(cfg).state_dict(), meta, {}))
    model = eval_ngram.load_artifact(str(path))[0]
    assert isinstance(model, train_gpt.GPT) and model.cfg == cfg  # the typed config evaluation reads


def test_the_payload_is_several_lzma_streams_that_unpack_to_the_same_tensors(monkeypatch):
    cfg = tiny_config()
    model = train_gpt.GPT(cfg)
    whole = eval_ngram.unpack_artifact(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}))[0]
    monkeypatch.setattr(eval_ngram, "LZMA_CHUNK", 4096)
    blob = train_gpt.pack_model(model, cfg, {"train_time_s": 0.0})
    header, payload_at = eval_ngram.read_header(blob)
    streams = [n for _, n in header["payload_streams"]]
    assert len(streams) > 3
    chunked = eval_ngram.unpack_artifact(blob)[0]
    assert chunked.keys() == whole.keys() and all(torch.equal(chunked[n], whole[n]) for n in whole)
    second = payload_at + streams[0] + streams[1] // 2  # inside stream 2
    damaged = blob[:second] + bytes(b ^ 0xFF for b in blob[second:second + 16]) + blob[second + 16:]
    with pytest.raises(eval_ngram.ArtifactError, match="payload"):
        eval_ngram.unpack_artifact(damaged)


def test_the_training_time_ngram_cache_is_packed_whole_and_primes_the_mixer(sp1024_shards, sp1024_model):
    cfg = tiny_config(f"data_dir={sp1024_shards}", f"tokenizer={sp1024_model}", "iterations=2",
                      "max_wallclock_seconds=0", "ngram_order=3", "ngram_cache_bytes=20000")
    torch.manual_seed(0)
    model = train_gpt.GPT(cfg)
    facts = train_gpt.train(cfg, model, eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size), lambda line: None, 0, 1,
                            torch.device("cpu"))
    assert facts["ngram_counts"].num_entries() > 0  # 2 steps x 256 tokens were counted
    blob = train_gpt.pack_model(model, cfg, facts, {"ngram": facts["ngram_counts"].to_bytes(cfg.ngram_cache_bytes)})
    state, meta, tables = eval_ngram.unpack_artifact(blob)
    assert 0 < len(tables["ngram"]) <= 20000
    packed = eval_ngram.NGramCounts.from_bytes(tables["ngram"], "cpu")
    for n in range(2, 4):  # 20,000 bytes hold every n-gram counted, with its count
        assert all(torch.equal(a, b) for a, b in zip(packed.table(n), facts["ngram_counts"].table(n))), n
    unpacked = train_gpt.model_from_artifact(state, meta).eval()
    val, byte_tables = eval_ngram.load_val_tokens(sp1024_shards)[:2000], eval_ngram.byte_tables(sp1024_model, 1024)
    common = dict(eval_stride=16, ngram_order=3, eval_audit=16, eval_chunk_tokens=500, ttt_steps=0)
    primed = eval_ngram.score(unpacked, val, byte_tables, artifact_tables=tables, **common)
    cold = eval_ngram.score(unpacked, val, byte_tables, artifact_tables={}, **common)
    assert primed["val_loss"] < cold["val_loss"] - 0.02  # the counts of text like this one help from its first token
    assert primed["audit_count"] > 0 and primed["audit_max_err"] < 1e-6


def test_the_clock_waits_at_the_start_gate_and_the_wait_is_not_training_time(sp1024_shards, sp1024_model, tmp_path):
    gate = tmp_path / "row_before_ended"
    cfg = tiny_config(f"data_dir={sp1024_shards}", f"tokenizer={sp1024_model}", "iterations=2",
                      "max_wallclock_seconds=0", f"start_gate={gate}")
    started, seconds = time.perf_counter(), {}  # each line logged: when it came

    def log(line):
        seconds[line] = time.perf_counter() - started
    threading.Timer(2.5, gate.touch).start()  # the row before this one ends 2.5 s from now (this run alone takes ~1 s)
    facts = train_gpt.train(cfg, train_gpt.GPT(cfg), eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size), log, 0, 1,
                            torch.device("cpu"))
    assert time.perf_counter() - started >= 2.5 and gate.exists()
    waited = [line for line in seconds if line.startswith("start_gate waited_s=")]
    assert len(waited) == 1 and facts["train_time_s"] < float(waited[0].split("=")[1])  # two tiny steps: the wait was not counted
    # the wait is announced as it begins (records/bench.py --prewarm stops a compile-only run there)
    assert seconds[f"start_gate waiting path={gate}"] < 2.0 <= seconds[waited[0]]
