"""Rolling checkpoints: a resumed run is bit-identical to an uninterrupted one, a kill at any moment of a save
leaves the older checkpoints whole, a corrupt newest checkpoint falls back to the previous one, and bad data or
a diverged loss halts the run with a checkpoint to continue from."""
import lzma
import os
import random

import numpy as np
import pytest
import torch

import eval_ngram
import train_gpt

SAMPLE_TEXT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample",
                           "gutenberg3_val.txt.xz")
SHARD_TOKENS, SHARDS = 300, 5  # each step moves 64 tokens on (reading 65), so it enters shard 2 during step 10
TINY = ["vocab_size=256", "tokenizer=bytes", "seq_len=32", "eval_stride=16", "train_batch_tokens=64", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32",
        "num_heads=2", "num_kv_heads=1", "enrich_hidden=32", "bigram_buckets=64", "bigram_dim=8", "iterations=20",
        "max_wallclock_seconds=0", "warmup_steps=3", "log_every=5", "device=cpu", "compile=off"]


def write_shards(folder):
    """Byte-level shards of real text: SHARDS train shards of SHARD_TOKENS tokens and one val shard."""
    with lzma.open(SAMPLE_TEXT) as f:
        text = f.read(SHARD_TOKENS * (SHARDS + 1))
    tokens = [b for b in text if b]
    for i in range(SHARDS):
        eval_ngram.write_shard(str(folder / f"text_train_{i:06d}.bin"), tokens[i * SHARD_TOKENS:(i + 1) * SHARD_TOKENS])
    eval_ngram.write_shard(str(folder / "text_val_000000.bin"), [0] + tokens[-SHARD_TOKENS:])
    return str(folder)


@pytest.fixture
def data_dir(tmp_path):
    return write_shards(tmp_path)


def config(data_dir, *overrides):
    """The tiny run, reading its shards in order (the tests below name data positions) unless overridden."""
    return train_gpt.resolve_config("smoke", [f"data_dir={data_dir}", *TINY, "train_order=sequential", *overrides])[0]


def run(cfg, checkpoint_dir="", init_seed=0, before_batch=None, lines=None):
    """Train a freshly initialized model; before_batch(n, model) runs before the n-th batch is read (n = 1, 2, ...)."""
    torch.manual_seed(init_seed)
    model = train_gpt.GPT(cfg)
    stream = eval_ngram.TrainStream.for_config(cfg, holdout_tokens=0)
    if before_batch:
        read, calls = stream.next_batch, [0]

        def next_batch(*args):
            calls[0] += 1
            before_batch(calls[0], model)
            return read(*args)
        stream.next_batch = next_batch
    log = lines.append if lines is not None else (lambda line: None)
    facts = train_gpt.train(cfg, model, stream, log, 0, 1, torch.device("cpu"), checkpoint_dir=checkpoint_dir)
    return model, facts


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 20-step run (model, facts) that every interrupted and resumed run must reproduce."""
    return run(config(write_shards(tmp_path_factory.mktemp("straight"))))


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs"


def kill_after(n):
    def before_batch(calls, model):
        if calls > n:
            raise KeyboardInterrupt  # a preemption: no handler runs, only what is on disk survives
    return before_batch


def test_resume_is_bit_identical_to_an_uninterrupted_run(data_dir, tmp_path, straight):
    straight, facts = straight
    with pytest.raises(KeyboardInterrupt):
        run(config(data_dir, "checkpoint_every_s=1e-9"), str(tmp_path / "ckpt"), before_batch=kill_after(10))
    assert torch.load(tmp_path / "ckpt" / "checkpoint_current.pt", weights_only=True)["step"] == 10
    assert torch.load(tmp_path / "ckpt" / "checkpoint_prev2.pt", weights_only=True)["step"] == 8
    first_part_s = torch.load(tmp_path / "ckpt" / "checkpoint_current.pt", weights_only=True)["train_time_s"]
    lines = []
    resumed, resumed_facts = run(config(data_dir, "resume=auto"), str(tmp_path / "ckpt"), init_seed=1, lines=lines)
    assert any(line.startswith("resumed ") and "step=10" in line for line in lines)
    assert resumed_facts["steps"] == facts["steps"] == 20
    assert resumed_facts["losses"] == facts["losses"]  # the loss curve continues, step for step
    assert resumed_facts["train_time_s"] > first_part_s  # the clock continues too (time-keyed schedules need it)
    assert_same_weights(resumed, straight)  # EMA weights, after EMA, optimizer, data position and RNG restored


def test_a_run_reading_shuffled_windows_resumes_bit_identically_too(data_dir, tmp_path):
    shuffled = ("train_order=shuffled", "seed=3", "iterations=30")  # 2 windows a step, at most 45 an epoch
    straight, facts = run(config(data_dir, *shuffled))
    with pytest.raises(KeyboardInterrupt):
        run(config(data_dir, *shuffled, "checkpoint_every_s=1e-9"), str(tmp_path), before_batch=kill_after(25))
    saved = torch.load(tmp_path / "checkpoint_current.pt", weights_only=True)["stream"]
    assert saved["order"] == "shuffled" and saved["epoch"] == 1  # stopped in the second epoch's order
    resumed, resumed_facts = run(config(data_dir, *shuffled, "resume=auto"), str(tmp_path), init_seed=1)
    assert resumed_facts["losses"] == facts["losses"]
    assert_same_weights(resumed, straight)


def test_a_run_resumed_from_its_final_checkpoint_ends_with_the_recurrence_it_trained_with(data_dir, tmp_path):
    """The loop switches depth recurrence on before a step; resumed at its end it stops before any step, so the
    switch comes from the checkpoint (else packing and scoring would run the model without its repeated blocks)."""
    finished, _ = run(config(data_dir, "checkpoint_every_s=1e-9"), str(tmp_path / "ckpt"))
    assert finished.recurrence_active and torch.load(tmp_path / "ckpt" / "checkpoint_current.pt", weights_only=True)["step"] == 20
    resumed, facts = run(config(data_dir, "resume=auto"), str(tmp_path / "ckpt"), init_seed=1)
    assert facts["steps"] == 20 and resumed.recurrence_active
    assert_same_weights(resumed, finished)


def test_a_checkpoint_resumes_only_on_the_training_split_it_was_made_on(data_dir):
    stream = eval_ngram.TrainStream(data_dir, 256)
    stream.take(100)
    saved = stream.state()
    eval_ngram.TrainStream(data_dir, 256).restore(saved)  # the same split: fine
    with pytest.raises(eval_ngram.DataError, match="another split of the training shards"):
        eval_ngram.TrainStream(data_dir, 256, holdout_tokens=1000).restore(saved)
    older = {k: v for k, v in saved.items() if k != "spans"}  # checkpoints written before the split was saved
    resumed = eval_ngram.TrainStream(data_dir, 256, holdout_tokens=1000)
    resumed.restore(older)
    assert resumed.position == 100


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    torch.save(eval_ngram.rng_states(), tmp_path / "rng.pt")
    expected = torch.rand(3), np.random.standard_normal(3), random.random()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    eval_ngram.set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.standard_normal(3), expected[1]) and random.random() == expected[2]


def test_save_logs_size_and_time_and_keeps_three(tmp_path):
    lines = []
    for step in range(4):
        eval_ngram.save_checkpoint(str(tmp_path), {"step": step}, 0, lines.append)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_current.pt", "checkpoint_prev.pt", "checkpoint_prev2.pt"]
    assert [torch.load(p, weights_only=True)["step"] for p in eval_ngram.checkpoint_paths(str(tmp_path), 0)] == [3, 2, 1]
    path = eval_ngram.checkpoint_paths(str(tmp_path), 0)[0]
    assert lines[-1].startswith(f"checkpoint saved path={path} bytes={os.path.getsize(path)} seconds=")


@pytest.mark.parametrize("killed_at_rename", [1, 2, 3])  # prev -> prev2, current -> prev, temp -> current
def test_a_kill_between_write_and_rename_leaves_the_older_checkpoints_whole(tmp_path, monkeypatch, killed_at_rename):
    folder, log = str(tmp_path), lambda line: None
    for step in (1, 2):
        eval_ngram.save_checkpoint(folder, {"step": step, "weights": torch.full((4,), float(step))}, 0, log)
    real_replace, renames = os.replace, [0]

    def replace(src, dst):
        renames[0] += 1
        if renames[0] == killed_at_rename:
            raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        eval_ngram.save_checkpoint(folder, {"step": 3, "weights": torch.full((4,), 3.0)}, 0, log)
    monkeypatch.setattr(os, "replace", real_replace)
    assert os.path.exists(eval_ngram.checkpoint_paths(folder, 0)[0] + ".tmp")  # the stray temp file is ignored
    state = eval_ngram.load_checkpoint(config(folder, "resume=auto"), folder, 0, log)
    assert state["step"] == 2 and torch.equal(state["weights"], torch.full((4,), 2.0))
    eval_ngram.save_checkpoint(folder, {"step": 3}, 0, log)  # the next save goes through
    assert eval_ngram.load_checkpoint(config(folder, "resume=auto"), folder, 0, log)["step"] == 3


class NotData:  # anything but tensors and plain containers must never be unpickled from a checkpoint
    pass


@pytest.mark.parametrize("damage", ["truncate", "garbage", "code"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    folder, lines = str(tmp_path), []
    for step in (1, 2):
        eval_ngram.save_checkpoint(folder, {"step": step}, 0, lines.append)
    newest = eval_ngram.checkpoint_paths(folder, 0)[0]
    if damage == "truncate":
        os.truncate(newest, os.path.getsize(newest) // 2)
    elif damage == "garbage":
        with open(newest, "wb") as f:
            f.write(os.urandom(300))
    else:
        torch.save({"step": 2, "payload": NotData()}, newest)
    assert eval_ngram.load_checkpoint(config(folder, "resume=auto"), folder, 0, lines.append)["step"] == 1
    assert lines[-1].startswith(f"warning: checkpoint {newest} is unreadable")
    with pytest.raises(eval_ngram.DataError, match="no readable checkpoint"):
        eval_ngram.load_checkpoint(config(folder, f"resume={newest}"), folder, 0, lines.append)


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    assert eval_ngram.load_checkpoint(config(str(tmp_path), "resume=auto"), str(tmp_path), 0, print) is None


@pytest.mark.parametrize("every", ["0", "1e-9"])  # no rolling checkpoints (one is saved at the halt) | every step
def test_a_shard_truncated_mid_run_halts_with_a_checkpoint_that_resumes_exactly(data_dir, tmp_path, every, straight):
    shard = eval_ngram.find_shards(data_dir, "train")[2]
    intact = eval_ngram.read_shard(shard)

    def truncate_after_start(calls, model):
        if calls == 1:
            os.truncate(shard, os.path.getsize(shard) - 100)
    with pytest.raises(eval_ngram.DataError, match=r"bytes; re-create or re-download it; training halted at step 9, "
                                                    r"checkpoint .*checkpoint_current\.pt"):
        run(config(data_dir, f"checkpoint_every_s={every}"), str(tmp_path / "ckpt"), before_batch=truncate_after_start)
    kept = torch.load(tmp_path / "ckpt" / "checkpoint_current.pt", weights_only=True)
    assert kept["step"] == 9 and {k: kept["stream"][k] for k in ("shard_index", "position", "epoch")} == {
        "shard_index": 1, "position": 276, "epoch": 0}
    eval_ngram.write_shard(shard, intact)  # the data is repaired; the same command with resume=auto continues
    resumed, _ = run(config(data_dir, "resume=auto"), str(tmp_path / "ckpt"), init_seed=1)
    assert_same_weights(resumed, straight[0])


def test_a_diverged_loss_halts_and_keeps_the_last_finite_checkpoint(data_dir, tmp_path):
    def poison(calls, model):
        if calls == 7:  # the weights go non-finite during step 7
            with torch.no_grad():
                model.tok_emb.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"train loss was not finite, first at step 7; training halted at step "
                                                 r"7, checkpoint .*checkpoint_current\.pt; lower the learning rates"):
        run(config(data_dir, "checkpoint_every_s=1e-9"), str(tmp_path), before_batch=poison)
    kept = torch.load(tmp_path / "checkpoint_current.pt", weights_only=True)
    assert kept["step"] == 6 and all(torch.isfinite(t).all() for t in kept["model"].values())


def test_a_loss_gone_non_finite_between_log_steps_is_caught_and_never_checkpointed(data_dir, tmp_path):
    def poison(calls, model):
        if calls == 7:  # step 7 of 20; progress lines at steps 1, 5, 10: the device-side record names step 7
            with torch.no_grad():
                model.tok_emb.weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"not finite, first at step 7; training halted at step 10; lower"):
        run(config(data_dir), str(tmp_path / "ckpt"), before_batch=poison)  # no rolling checkpoints: a halt saves one,
    assert not os.path.exists(tmp_path / "ckpt")  # but never of a diverged state


def test_resume_auto_continues_the_unfinished_record_folder_of_the_run(tmp_path):
    cfg = config(str(tmp_path), f"records_dir={tmp_path}", "track=t", "resume=auto")
    assert train_gpt.resumable_folder(cfg, "long") is None
    folder = tmp_path / "t" / "2025-01-02_long_seed1337_2"
    folder.mkdir(parents=True)
    eval_ngram.save_checkpoint(str(folder), {"step": 1}, 0, lambda line: None)
    (tmp_path / "t" / "2025-01-02_long_seed1337_v2").mkdir()  # another run's name: never taken
    assert train_gpt.resumable_folder(cfg, "long") == str(folder)
    (folder / "submission.json").write_text("{}")  # a finished record is never resumed
    assert train_gpt.resumable_folder(cfg, "long") is None


def test_presets_checkpoint_only_long_runs():
    assert train_gpt.resolve_config("record")[0].checkpoint_every_s == 0
    long = train_gpt.resolve_config("long")[0]
    assert long.checkpoint_every_s > 0 and long.resume == "auto"
