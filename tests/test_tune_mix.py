"""records/tune_mix.py chooses the n-gram mixer's settings on the training split's held-out tail: it scores every
combination of its grid there, ranks them, and never reads a validation token."""
import copy
import glob
import json
import os
import re
import sys

import pytest

import eval_ngram
import train_gpt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "records"))
import tune_mix  # noqa: E402

HOLDOUT = 3000


@pytest.fixture(scope="module")
def artifact(sp1024_shards, sp1024_model, tmp_path_factory) -> str:
    """A few steps of the smoke preset on the sp1024 sample, its last HOLDOUT training tokens held out."""
    records = tmp_path_factory.mktemp("records")
    train_gpt.main(["--preset", "smoke", f"data_dir={sp1024_shards}", f"tokenizer={sp1024_model}", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1",
                    "model_dim=32", "num_heads=4", "num_kv_heads=2", "enrich_hidden=32", "seq_len=32", "eval_stride=16",
                    "train_batch_tokens=256", "iterations=3", "max_wallclock_seconds=0", "device=cpu", "compile=off",
                    "eval_max_tokens=512", "eval_chunk_tokens=256", "ngram_order=3", "ttt_steps=0", "eval_audit=0", f"records_dir={records}",
                    f"train_holdout_tokens={HOLDOUT}"])
    return glob.glob(os.path.join(records, "**", "artifact.pgolf"), recursive=True)[0]


def final_line(artifact: str, capsys, *options: str) -> str:
    """eval_ngram.py's `final ...` line for the artifact scored with these options."""
    assert eval_ngram.main([artifact, "--device", "cpu", "--audit", "0", *options]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("final "))


def test_a_grid_is_ranked_on_held_out_training_text_without_reading_validation(artifact, monkeypatch, capsys, tmp_path):
    def no_validation(*args, **kwargs):
        raise AssertionError("tune_mix read the validation tokens")
    monkeypatch.setattr(eval_ngram, "load_val_tokens", no_validation)
    monkeypatch.setattr(eval_ngram, "find_shards", lambda data_dir, split: (
        no_validation() if split == "val" else sorted(glob.glob(os.path.join(data_dir, f"*_{split}_*.bin")))))
    scored = []
    score = eval_ngram.score
    monkeypatch.setattr(eval_ngram, "score", lambda model, tokens, *a, **k: scored.append(tokens) or score(model, tokens, *a, **k))

    default = eval_ngram.MIX_DEFAULTS["gate_bias"]
    assert tune_mix.main([artifact, "--grid", f"gate_bias={default:g},-2", "--out", str(tmp_path)]) == 0
    data_dir = train_gpt.model_from_artifact(*eval_ngram.unpack_artifact(open(artifact, "rb").read())[:2]).cfg.data_dir
    # one model pass for both mixer settings (replayed from its trace), on the held-out tail
    assert len(scored) == 1 and all(t.equal(eval_ngram.holdout_tokens(data_dir, HOLDOUT)) for t in scored)
    facts = json.loads((tmp_path / "tune_mix.json").read_text())
    rows = facts["rows"]
    assert [row["mix"]["gate_bias"] for row in rows] in ([default, -2.0], [-2.0, default])
    assert rows[0]["val_bpb"] <= rows[1]["val_bpb"] and rows[0]["val_bpb"] != rows[1]["val_bpb"]
    # the pass without the cache, so a table says whether mixing helps at all
    model = eval_ngram.load_artifact(artifact)[0]
    alone = score(model, scored[0], eval_ngram.byte_tables(model.cfg.tokenizer, model.cfg.vocab_size), ngram_order=0)
    assert rows[0]["model_alone_bpb"] == rows[1]["model_alone_bpb"] == pytest.approx(alone["val_bpb"], abs=1e-6)
    assert f"| {rows[0]['val_bpb'] - rows[0]['model_alone_bpb']:+.6f} |" in (tmp_path / "tune_mix.md").read_text()
    assert [row["defaults"] for row in rows] == [row["mix"]["gate_bias"] == default for row in rows]
    out = capsys.readouterr().out
    assert out.endswith((tmp_path / "tune_mix.md").read_text()) and "2/2 " in out
    assert f"best as MIX_DEFAULTS: {rows[0]['mix']}" in out and "(defaults)" in out
    as_packed = tune_mix.arguments(rows[0], facts["defaults"], same="none (the artifact's own settings)")
    assert f"best as eval_ngram.py arguments: {as_packed}" in out


def test_the_default_grid_is_small_and_holds_the_defaults():
    base = {**eval_ngram.MIX_DEFAULTS, "ngram_order": 7, "ttt_lr": 1e-3, "ttt_rank": 8, "ttt_steps": 0}
    settings = tune_mix.combinations(tune_mix.parse_grid([]), base)
    assert len(settings) <= 12 and settings[0] == base
    assert len({json.dumps(s) for s in settings}) == len(settings)


def test_settings_without_test_time_training_are_not_scored_once_per_ttt_value():
    base = {**eval_ngram.MIX_DEFAULTS, "ngram_order": 7, "ttt_lr": 1e-3, "ttt_rank": 8, "ttt_steps": 0}
    settings = tune_mix.combinations(tune_mix.parse_grid(["ttt_steps=0,2", "ttt_lr=0.01,0.02", "ttt_rank=4,8"]), base)
    without = [s for s in settings if s["ttt_steps"] == 0]
    assert without == [base] and len(settings) == 1 + 2 * 2  # the defaults, then steps 2 with each lr and rank


@pytest.mark.parametrize("model_side", [dict(ttt_steps=0), dict(ttt_steps=1, ttt_lr=0.01), dict(ttt_steps=1, ttt_doc_chunk=16)])
def test_a_replayed_mixer_scores_exactly_what_the_mixer_scores_in_its_own_pass(artifact, model_side):
    """The stream and per-document scorers, with and without TTT: the trace's replay is the mixer's score, bit for bit."""
    model, _, tables, _ = eval_ngram.load_artifact(artifact)
    tokens = eval_ngram.holdout_tokens(model.cfg.data_dir, HOLDOUT).clone()
    tokens[::500] = eval_ngram.text_codec(model.cfg.tokenizer)[2]  # six documents: the per-document scorer's cache learns
    byte_tables = eval_ngram.byte_tables(model.cfg.tokenizer, model.cfg.vocab_size)
    trace = eval_ngram.MixerTrace()
    alone = eval_ngram.score(copy.deepcopy(model), tokens, byte_tables, artifact_tables=tables, trace=trace, **model_side)
    for order, mix in ((3, {}), (2, {"gate_bias": -2.0, "beta": 0.5})):
        mixed = eval_ngram.score(copy.deepcopy(model), tokens, byte_tables, artifact_tables=tables, ngram_order=order,
                                 mix=mix, **model_side)
        nll = trace.replay(tokens, order, model.cfg.vocab_size, **mix)
        assert nll / alone["targets"] == mixed["val_loss"] != alone["val_loss"]


def test_eval_ngram_takes_a_recent_weight_and_its_audit_passes(artifact, capsys):
    assert eval_ngram.main([artifact, "--device", "cpu", "--audit", "16", "--mix", "recent=1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^audit positions=\d+ .* PASS$", out, re.M), out
    assert final_line(artifact, capsys, "--mix", "recent=0") != final_line(artifact, capsys)  # it reaches the scorer (default 1)


def test_the_grid_can_vary_the_ngram_order_and_says_which_order_won(artifact, capsys, tmp_path):
    assert tune_mix.main([artifact, "--grid", "ngram_order=2,3", "--out", str(tmp_path)]) == 0  # the artifact's: 3
    facts = json.loads((tmp_path / "tune_mix.json").read_text())
    rows = facts["rows"]
    assert sorted(row["settings"]["ngram_order"] for row in rows) == [2, 3] and rows[0]["val_bpb"] != rows[1]["val_bpb"]
    assert [row["defaults"] for row in rows] == [row["settings"]["ngram_order"] == 3 for row in rows]
    best = rows[0]["settings"]["ngram_order"]
    out = capsys.readouterr().out
    assert f"best as config keys: ngram_order={best} ttt_lr=0.001" in out
    assert ("--ngram-order 2" in out.split("best as eval_ngram.py arguments: ")[1]) == (best == 2)


def test_the_grid_can_vary_the_chunk_size_and_eval_ngram_takes_the_winner(artifact, capsys, tmp_path):
    """Smaller chunks: the cache (and TTT) learn more often; the best size is printed as eval_ngram.py's option."""
    assert tune_mix.main([artifact, "--grid", "eval_chunk_tokens=64,256", "--out", str(tmp_path)]) == 0  # the artifact's: 256
    rows = json.loads((tmp_path / "tune_mix.json").read_text())["rows"]
    assert sorted(row["settings"]["eval_chunk_tokens"] for row in rows) == [64, 256] and rows[0]["val_bpb"] != rows[1]["val_bpb"]
    best = rows[0]["settings"]["eval_chunk_tokens"]
    assert ("--chunk-tokens 64" in capsys.readouterr().out.split("best as eval_ngram.py arguments: ")[1]) == (best == 64)
    chunk_learning = ("--mix", "recent=0")  # the sequential cache (recent 1) scores the same at any chunk size
    assert final_line(artifact, capsys, *chunk_learning) != final_line(artifact, capsys, *chunk_learning, "--chunk-tokens", "64")
    with pytest.raises(eval_ngram.UsageError, match="--chunk-tokens 0: must be in"):
        eval_ngram.main([artifact, "--chunk-tokens", "0"])


def test_the_grid_can_read_longer_windows_than_training_had_and_eval_ngram_takes_the_winner(artifact, capsys, tmp_path):
    """The defaults' row is the training length (32 here) in tokens; a longer window gives every token more context."""
    assert tune_mix.main([artifact, "--grid", "eval_seq_len=32,64", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "tune_mix.json").read_text())["rows"]
    assert sorted(row["settings"]["eval_seq_len"] for row in rows) == [32, 64] and rows[0]["val_bpb"] != rows[1]["val_bpb"]
    assert [row["defaults"] for row in rows] == [row["settings"]["eval_seq_len"] == 32 for row in rows]
    best = rows[0]["settings"]["eval_seq_len"]
    out = capsys.readouterr().out
    assert ("--seq-len 64" in out.split("best as eval_ngram.py arguments: ")[1]) == (best == 64)
    assert f"eval_seq_len={best}\n" in out
    assert final_line(artifact, capsys) != final_line(artifact, capsys, "--seq-len", "64")  # the option reaches the scorer
    with pytest.raises(eval_ngram.UsageError, match="--grid"):
        tune_mix.parse_grid(["eval_seq_len=0,64"])


def test_an_order_passed_on_the_command_line_is_in_the_printed_arguments(artifact, capsys):
    assert tune_mix.main([artifact, "--ngram-order", "2", "--grid", "gate_bias=-7"]) == 0  # the artifact's order: 3
    assert "best as eval_ngram.py arguments: --ngram-order 2" in capsys.readouterr().out


def test_the_grid_can_choose_between_stream_and_per_document_scoring(artifact, capsys, tmp_path):
    assert tune_mix.main([artifact, "--ttt-steps", "1", "--grid", "ttt_doc_chunk=0,16", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "tune_mix.json").read_text())["rows"]
    assert sorted(row["settings"]["ttt_doc_chunk"] for row in rows) == [0, 16] and rows[0]["val_bpb"] != rows[1]["val_bpb"]
    best = rows[0]["settings"]["ttt_doc_chunk"]
    assert ("--ttt-doc-chunk 16" in capsys.readouterr().out.split("best as eval_ngram.py arguments: ")[1]) == (best == 16)


def test_ttt_on_every_weight_can_be_tuned_like_the_adapters(artifact, tmp_path):
    scores = {}
    for weights in ("lora", "all"):
        assert tune_mix.main([artifact, "--ttt-steps", "1", "--ttt-weights", weights, "--grid", "ttt_lr=0.01",
                              "--out", str(tmp_path / weights)]) == 0
        facts = json.loads((tmp_path / weights / "tune_mix.json").read_text())
        assert facts["ttt_weights"] == weights and f"ttt_weights={weights}," in (tmp_path / weights / "tune_mix.md").read_text()
        scores[weights] = [row["val_bpb"] for row in facts["rows"] if row["settings"]["ttt_lr"] == 0.01]
    assert scores["lora"] != scores["all"]  # the option reached the learner


def test_the_grid_can_vary_ttt_steps_and_rank_and_eval_ngram_takes_the_winner(artifact, capsys, tmp_path):
    """The defaults' row has --ttt-steps' value (0: off); the rank only matters where TTT runs, so without TTT it is
    scored once, at the defaults' rank."""
    assert tune_mix.main([artifact, "--grid", "ttt_steps=0,2", "--grid", "ttt_rank=2,4", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "tune_mix.json").read_text())["rows"]
    scores = {(row["settings"]["ttt_steps"], row["settings"]["ttt_rank"]): row["val_bpb"] for row in rows}
    assert len(rows) == len(scores) == 3 and scores[2, 2] != scores[2, 4]  # (0, 8): the defaults'; (0, 2), (0, 4) alike
    best = rows[0]["settings"]
    out = capsys.readouterr().out.split("best as eval_ngram.py arguments: ")[1]
    assert ("--ttt-steps 2" in out) == (best["ttt_steps"] == 2)
    assert final_line(artifact, capsys, "--ttt-steps", "2", "--ttt-rank", "2") != final_line(artifact, capsys, "--ttt-steps", "2")


@pytest.mark.parametrize("grid", [["ttt_lr=0.001,0.01"], ["ttt_rank=2,4"], ["ttt_steps=0", "ttt_lr=0.01"]])
def test_a_ttt_grid_without_test_time_training_is_refused(artifact, grid):
    with pytest.raises(eval_ngram.UsageError, match="test-time training is off"):
        tune_mix.main([artifact, *[f"--grid={item}" for item in grid]])


@pytest.mark.parametrize("item", ["ngram_order=1,3", "ngram_order=2.5", "ttt_lr=-1", "bogus=1", "gate_bias=x"])
def test_a_bad_grid_is_a_clear_error(item):
    with pytest.raises(eval_ngram.UsageError, match="--grid"):
        tune_mix.parse_grid([item])


def test_a_mixer_weight_the_mixer_would_refuse_is_refused_before_anything_is_scored():
    with pytest.raises(eval_ngram.UsageError, match="recent >= 0"):
        tune_mix.parse_grid(["recent=1,-1"])


def test_an_artifact_packed_before_holdouts_existed_is_not_taken_to_have_one(artifact, monkeypatch):
    load = eval_ngram.load_artifact

    def without_the_key(path):
        model, meta, tables, size = load(path)
        return model, {**meta, "config": {k: v for k, v in meta["config"].items() if k != "train_holdout_tokens"}}, tables, size
    monkeypatch.setattr(eval_ngram, "load_artifact", without_the_key)
    with pytest.raises(eval_ngram.UsageError, match="--holdout-tokens 0: must be >= 1 .the artifact trained on its whole"):
        tune_mix.main([artifact])


@pytest.mark.parametrize("argv, message", [
    (["--grid", "gate_speed=1,2"], "KEY one of beta"),
    (["--grid", "beta=1,x"], "KEY=NUMBER,NUMBER"),
    (["--holdout-tokens", "0"], "--holdout-tokens 0: must be >= 1"),
])
def test_bad_arguments_are_one_clear_error(artifact, argv, message):
    with pytest.raises(eval_ngram.UsageError, match=message):
        tune_mix.main([artifact, *argv])
