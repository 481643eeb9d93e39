"""records/bench.py: rows of peer scripts and of our trainer, run for a second each, end up in one table.

The peer and "ours" scripts here are tiny stand-ins that print the log lines the real scripts print, so the
harness (environment, shards under challenge names, protocols, parsing, failure rows) runs in seconds on CPU;
one test also runs a row of the real `smoke` preset next to the fake peer (about 15 s).
"""
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "records"))
import bench
import eval_ngram
from eval_ngram import write_shard

# Reads what challenge scripts read, checks the shards it was shown, prints challenge-style lines.
FAKE_PEER = '''
import glob, os, time
world_size = int(os.environ.get("WORLD_SIZE", "1"))
grad_accum_steps = 8 // world_size
train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524_288))
warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 1200))
seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
data = os.environ["DATA_PATH"]
train, val = glob.glob(data + "/fineweb_train_*.bin"), glob.glob(data + "/fineweb_val_*.bin")
print(f"shards train:{len(train)} val:{len(val)} vocab:{os.environ.get('VOCAB_SIZE')} seed:{os.environ['SEED']}")
print(f"val_bytes:{sum(os.path.getsize(p) for p in val)}")
print(f"world_size:{world_size} grad_accum_steps:{grad_accum_steps} warmdown_iters:{warmdown_iters}")
print(f"train_batch_tokens:{train_batch_tokens} train_seq_len:1024 iterations:20000")
if os.environ.get("FAKE_CRASH"):
    raise RuntimeError("CUDA is required")
time.sleep(float(os.environ.get("FAKE_COMPILE_S", 0)))  # start-up and compilation, before the clock
start, step = time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    time.sleep(0.02)
    step += 1
ms = 1000 * (time.perf_counter() - start)
print(f"step:{step}/20000 val_loss:2.0000 val_bpb:1.6000 train_time:{ms:.0f}ms step_avg:{ms / step:.2f}ms")
print("peak memory allocated: 123 MiB reserved: 130 MiB")
time.sleep(float(os.environ.get("FAKE_SCORE_S", 0)))  # packing and scoring
print("Total submission size int8+zlib: 4567 bytes")
print("final_int8_zlib_roundtrip val_loss:2.0000 val_bpb:1.5000 eval_time:250ms")
print("final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.50000000")
'''

# Our trainer's command line and output lines (SPEC.md), with --print-config for the eighth protocol.
FAKE_OURS = '''
import json, os, sys, time
keys = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
if "--print-config" in sys.argv:
    print(json.dumps({"train_batch_tokens": int(keys.get("train_batch_tokens", 786432))}))
    sys.exit(0)
print("keys " + json.dumps(keys))
if "meet" in keys:  # a rendezvous: wait up to 20 s for `meet_rows` rows (this one too) to be running
    open(os.path.join(keys["meet"], keys["run_name"]), "w").close()
    deadline = time.time() + 20
    while len(os.listdir(keys["meet"])) < int(keys["meet_rows"]) and time.time() < deadline:
        time.sleep(0.05)
    print("met" if len(os.listdir(keys["meet"])) >= int(keys["meet_rows"]) else "alone")
iterations = int(keys.get("iterations", 20000))
print("config " + json.dumps({"iterations": iterations}))
if "crash" in keys:
    raise RuntimeError("CUDA out of memory")
time.sleep(float(keys.get("compile_s", 0)))
print(f"warmup compile_steps=10 seconds={float(keys.get('compile_s', 0)):.1f} (not counted)")
waiting_since = time.perf_counter()
if keys.get("start_gate"):
    print(f"start_gate waiting path={keys['start_gate']}")
while keys.get("start_gate") and not os.path.exists(keys["start_gate"]):
    time.sleep(0.02)
if keys.get("start_gate"):
    print(f"start_gate waited_s={time.perf_counter() - waiting_since:.1f}")
start, step = time.perf_counter(), 0
while time.perf_counter() - start < float(keys["max_wallclock_seconds"]) and step < iterations:
    time.sleep(0.01)
    step += 1
s = time.perf_counter() - start
print(f"step={step} train_loss=3.0000 tok_s={4096 * step / s:.0f} ms_step={1000 * s / step:.1f} mfu=n/a")
print(f"train_done steps={step} peak_mem_mib=0 tok_s={4096 * step / s:.0f} ms_step={1000 * s / step:.1f} train_time_s={s:.1f}")
time.sleep(float(keys.get("score_s", 0)))
print(f"record: {keys['records_dir']}/smoke/run")
print(f"final val_bpb=1.200000 val_loss=2.000000 bytes_total=3000 bytes_code=1000 train_time_s={s:.1f} eval_time_s=0.5")
'''


@pytest.fixture
def setup(tmp_path):
    """Shards with our exporter's names (not the challenge's), the fake scripts, and a table folder."""
    data = tmp_path / "data"
    data.mkdir()
    write_shard(str(data / "gutenberg_train_000000.bin"), np.arange(1, 250, dtype=np.uint16).repeat(800))
    write_shard(str(data / "gutenberg_val_000000.bin"), np.arange(1, 250, dtype=np.uint16).repeat(40))
    (tmp_path / "peer.py").write_text(FAKE_PEER)
    (tmp_path / "ours.py").write_text(FAKE_OURS)

    def common(data_dir=data, ours_script=tmp_path / "ours.py", seconds=0.5):
        """The arguments every test passes; ours_script=None runs the real train_gpt.py."""
        args = ["--data-dir", str(data_dir), "--tokenizer", "bytes", "--out", str(tmp_path / "bench"), "--seconds", str(seconds)]
        return args + (["--ours-script", str(ours_script)] if ours_script else [])
    return tmp_path, common


def log_of(table, row, tmp_path):
    folder = tmp_path / "bench" / f"{table['date']}_{table['name']}"
    return (folder / row["log"]).read_text()


def test_peer_and_ours_rows_make_one_table(setup, capsys):
    tmp_path, common = setup
    table = bench.main(["--peer", str(tmp_path / "peer.py"), "--ours", "shaped=smoke:num_layers=9,model_dim=64",
                        "--name", "t", *common()])
    peer, ours = table["rows"]
    assert (peer["label"], ours["label"]) == ("peer", "shaped") and peer["status"] == ours["status"] == "ok"
    # the peer found our shards under the challenge's names, with our vocab and seed
    assert "shards train:1 val:1 vocab:256 seed:1337" in log_of(table, peer, tmp_path)
    assert peer["steps"] > 0 and peer["tok_s"] == pytest.approx(524288 * peer["steps"] / peer["train_time_s"])
    assert (peer["val_bpb"], peer["peak_mem_mib"], peer["artifact_bytes"], peer["eval_time_s"]) == (1.5, 123, 4567, 0.25)
    assert peer["score_line"] == "final_int8_zlib_roundtrip_exact"
    # ours got the overrides and the common keys; no GPU, so no peak memory
    keys = json.loads(log_of(table, ours, tmp_path).split("keys ", 1)[1].splitlines()[0])
    assert keys["num_layers"] == "9" and keys["max_wallclock_seconds"] == "0.5" and keys["vocab_size"] == "256"
    assert (ours["val_bpb"], ours["artifact_bytes"], ours["peak_mem_mib"]) == (1.2, 3000, None)
    assert table["reference"] == "peer" and ours["ratio_bpb"] == pytest.approx(0.8)
    assert ours["ratio_tok_s"] == pytest.approx(ours["tok_s"] / peer["tok_s"])
    assert table["gpu"] == eval_ngram.card_name()
    # saved with the logs; the markdown table is the last thing printed
    folder = tmp_path / "bench" / f"{table['date']}_t"
    md = (folder / "table.md").read_text()
    assert json.loads((folder / "table.json").read_text())["rows"][1]["val_bpb"] == 1.2
    assert "| peak MiB | held-out bpb | held-out vs control | val_bpb |" in md
    assert "protocol `wall`" in md and "seed 1337" in md and "GPU " in md
    assert capsys.readouterr().out.endswith(md)


def test_a_card_is_named_by_its_uuid_so_rows_of_two_cards_never_share_a_table(monkeypatch):
    assert eval_ngram.card_name() == "cpu" or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA H200")
    cards = []
    for uuid in ("8adc1d21-ad89-525e-c0d0-b6846cc7cde4", "0b1e2c3d-0000-1111-2222-333344445555"):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index, uuid=uuid: type("Props", (), {"uuid": uuid})())
        cards.append(eval_ngram.card_name())
    assert cards[0] == "NVIDIA H200 (GPU-8adc1d21-ad89-525e-c0d0-b6846cc7cde4)" and cards[0] != cards[1]


def test_row_logs_are_named_with_plain_characters_only():
    assert bench.log_file_name(1, "sp8192+records_dir=/tmp/rec") == "1_sp8192_records_dir__tmp_rec.log"
    assert bench.log_file_name(12, "record_v1.b-2") == "12_record_v1.b-2.log"


def test_val_tokens_gives_every_row_the_same_shorter_validation_split(setup):
    tmp_path, common = setup
    table = bench.main(["--peer", str(tmp_path / "peer.py"), "--ours", "smoke", "--val-tokens", "1000", *common()])
    peer, ours = table["rows"]
    peer_log = log_of(table, peer, tmp_path)
    assert f"val_bytes:{1024 + 2 * 1000}\n" in peer_log  # one shard: the 1024-byte header and 1,000 uint16 tokens
    shown_to_peer = peer_log.split("DATA_PATH=", 1)[1].split()[0]
    keys = json.loads(log_of(table, ours, tmp_path).split("keys ", 1)[1].splitlines()[0])
    assert keys["data_dir"] == shown_to_peer  # ours scores the same subset
    md = (tmp_path / "bench" / f"{table['date']}_{table['name']}" / "table.md").read_text()
    assert table["val_tokens"] == 1000 and "the first 1,000 val tokens" in md


def test_val_docs_cuts_validation_at_a_document_start(tmp_path):
    """--val-docs keeps whole documents, so two tokenizers' rows score the same text."""
    write_shard(str(tmp_path / "fineweb_val_000000.bin"), np.array([1, 7, 8, 1, 9, 1, 5, 6, 6], dtype=np.uint16))
    write_shard(str(tmp_path / "fineweb_train_000000.bin"), np.array([1, 2, 3], dtype=np.uint16))
    assert bench.first_documents(str(tmp_path), 2).tolist() == [1, 7, 8, 1, 9]
    with pytest.raises(bench.UsageError, match="holds 3 validation documents"):
        bench.first_documents(str(tmp_path), 3)
    with pytest.raises(bench.UsageError, match="give one"):
        bench.parse_args(["--ours", "smoke", "--val-docs", "2", "--val-tokens", "5", "--data-dir", ".", "--tokenizer", "t"])


def test_failing_peer_is_a_failed_row_not_dropped(setup):
    tmp_path, common = setup
    table = bench.main(["--peer", f"broken={tmp_path / 'peer.py'}:FAKE_CRASH=1", "--peer", str(tmp_path / "peer.py"),
                        "--ours", "smoke", *common()])
    broken, peer, ours = table["rows"]
    assert broken["status"] == "failed" and broken["error"] == "exit 1: RuntimeError: CUDA is required"
    assert broken["ratio_bpb"] is None and table["reference"] == "peer"  # the first peer that finished
    assert ours["ratio_bpb"] == pytest.approx(0.8)
    md = (tmp_path / "bench" / f"{table['date']}_{table['name']}" / "table.md").read_text()
    assert "| broken | peer.py | **FAILED**: exit 1: RuntimeError: CUDA is required" in md


def test_eighth_divides_the_batch_and_removes_accumulation(setup):
    tmp_path, common = setup
    table = bench.main(["--protocol", "eighth", "--peer", str(tmp_path / "peer.py"), "--ours", "record", *common()])
    peer, ours = table["rows"]
    assert "grad_accum_steps:1 " in log_of(table, peer, tmp_path)  # ran from a patched copy
    assert "train_batch_tokens:65536 " in log_of(table, peer, tmp_path)
    assert peer["tok_s"] == pytest.approx(65536 * peer["steps"] / peer["train_time_s"])
    assert any(n.startswith("patched copy: grad_accum_steps=1") for n in peer["notes"])
    keys = json.loads(log_of(table, ours, tmp_path).split("keys ", 1)[1].splitlines()[0])
    assert (keys["train_batch_tokens"], keys["grad_accum_steps"]) == ("98304", "1")  # 786432 / 8


def test_train_tokens_caps_each_of_our_rows_at_the_same_tokens_whatever_its_batch(setup):
    tmp_path, common = setup
    # eighth: 786,432 / 8 = 98,304 tokens a step; half that batch takes twice the steps for the same tokens
    table = bench.main(["--protocol", "eighth", "--train-tokens", str(98304 * 3), "--ours", "record",
                        "--ours", "half=record:train_batch_tokens=393216", *common(seconds=30)])
    steps = [json.loads(log_of(table, row, tmp_path).split("keys ", 1)[1].splitlines()[0])["iterations"] for row in table["rows"]]
    assert steps == ["3", "6"] and [row["steps"] for row in table["rows"]] == [3, 6]
    assert all(row["status"] == "ok" for row in table["rows"])  # both stopped at the cap, long before 30 s
    md = (tmp_path / "bench" / f"{table['date']}_{table['name']}" / "table.md").read_text()
    assert "each of our rows trains exactly 294,912 tokens" in md


def test_train_tokens_fails_a_row_the_budget_stops_first_or_that_cannot_split_them(setup):
    tmp_path, common = setup
    table = bench.main(["--protocol", "eighth", "--train-tokens", str(98304 * 10**6), "--ours", "record",
                        "--ours", "odd=record:train_batch_tokens=786440", *common(seconds=0.3)])
    short, odd = table["rows"]
    assert short["status"] == "failed" and "before its 1000000 steps of --train-tokens" in short["error"]
    assert odd["status"] == "failed" and "not a whole number of this row's 98305-token steps" in odd["error"]
    with pytest.raises(bench.UsageError, match="caps our rows only"):
        bench.main(["--train-tokens", "98304", "--peer", str(tmp_path / "peer.py"), *common()])


def test_concurrent_runs_rows_of_equal_tokens_side_by_side_and_tables_them_in_order(setup, monkeypatch):
    tmp_path, common = setup
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    meet = tmp_path / "meet"
    meet.mkdir()
    rows = [arg for label in ("a", "b") for arg in ("--ours", f"{label}=record:meet={meet},meet_rows=2")]
    table = bench.main(["--protocol", "eighth", "--train-tokens", str(98304 * 3), "--concurrent", "2", *rows,
                        *common(seconds=60)])
    assert [(row["label"], row["status"], row["steps"]) for row in table["rows"]] == [("a", "ok", 3), ("b", "ok", 3)]
    assert all("\nmet\n" in log_of(table, row, tmp_path) for row in table["rows"])  # each found the other running
    # each row gets its share of the cores: two rows of all-core thread pools would spin against each other
    threads = max(1, os.cpu_count() // 2)
    assert all(log_of(table, row, tmp_path).startswith(f"$ OMP_NUM_THREADS={threads} ") for row in table["rows"])
    md = (tmp_path / "bench" / f"{table['date']}_{table['name']}" / "table.md").read_text()
    assert "rows ran 2 at a time on the same GPU(s)" in md
    with pytest.raises(bench.UsageError, match="only with --train-tokens"):
        bench.main(["--concurrent", "2", "--ours", "record", *common()])


def test_overlap_starts_a_row_while_the_one_before_scores_and_never_overlaps_two_clocks(setup):
    tmp_path, common = setup
    peer = str(tmp_path / "peer.py")
    # a scores for 1.5 s; p compiles for 2.5 s meanwhile, so its clock starts after a has ended; b compiles at once and
    # waits at its gate until p has scored for 1.5 s and ended
    started = time.time()
    table = bench.main(["--overlap", "--ours", "a=record:score_s=1.5", "--peer", f"p={peer}:FAKE_COMPILE_S=2.5,FAKE_SCORE_S=1.5",
                        "--ours", "b=record", *common()])
    a, p, b = table["rows"]
    assert [r["status"] for r in table["rows"]] == ["ok"] * 3
    assert time.time() - started < a["wall_s"] + p["wall_s"] + b["wall_s"] - 2.0  # a's and p's scoring overlapped the next rows
    assert a["wall_s"] + p["wall_s"] + b["wall_s"] > 7.5 and "next row started while this one packed" in row_notes_of(a)
    assert "next row started while this one packed" in row_notes_of(p) and "next row" not in row_notes_of(b)
    waited = float(log_of(table, b, tmp_path).split("start_gate waited_s=")[1].split()[0])
    assert waited >= 1.0  # b's clock waited for p's scoring
    assert "start_gate" not in log_of(table, a, tmp_path)  # the first row has nothing to wait for

    # a peer that compiles faster than the row before it scores starts its clock too early: its row fails
    table = bench.main(["--overlap", "--ours", "a=record:score_s=2", "--peer", f"p={peer}", "--name", "early", *common()])
    a, p = table["rows"]
    assert a["status"] == "ok" and p["status"] == "failed" and "its clock started" in p["error"] and "rerun it without --overlap" in p["error"]
    with pytest.raises(bench.UsageError, match="not with --concurrent"):
        bench.main(["--overlap", "--concurrent", "2", "--train-tokens", "98304", "--ours", "record", *common()])


def test_keep_records_keeps_our_rows_record_folders_where_asked(setup):
    tmp_path, common = setup
    keep = tmp_path / "keep"
    table = bench.main(["--keep-records", str(keep), "--ours", "a=record", "--peer", str(tmp_path / "peer.py"), *common()])
    ours, peer = table["rows"]
    assert ours["record_dir"].startswith(str(keep)) and os.path.isdir(os.path.dirname(os.path.dirname(ours["record_dir"])))
    assert f"record folder kept: {ours['record_dir']}" in row_notes_of(ours) and "record_dir" not in peer
    table = bench.main(["--ours", "a=record", "--name", "temporary", *common()])  # without it: a scratch folder, deleted
    assert not os.path.exists(os.path.dirname(os.path.dirname(table["rows"][0]["record_dir"])))


def test_prewarm_compiles_each_distinct_row_of_ours_beforehand_and_stops_it_at_its_gate(setup, capsys):
    tmp_path, common = setup
    # a and a2 differ only in name: one compile; a and b compile side by side (2 at a time), 1.5 s each
    started = time.time()
    table = bench.main(["--prewarm", "2", "--ours", "a=record:compile_s=1.5", "--ours", "a2=record:compile_s=1.5",
                        "--ours", "b=record:compile_s=1.5,seed_like=1", "--peer", str(tmp_path / "peer.py"), *common()])
    assert [row["status"] for row in table["rows"]] == ["ok"] * 4
    (warmed,) = table["prewarm"]
    assert (warmed["at_once"], warmed["configurations"], warmed["failed"]) == (2, 2, [])
    assert warmed["warmup_s"] == {"a": 1.5, "b": 1.5} and 1.5 <= warmed["seconds"] < 2.9  # side by side, not 3 s
    folder = tmp_path / "bench" / f"{table['date']}_{table['name']}"
    logs = sorted(p.name for p in folder.glob("prewarm_*.log"))
    assert logs == ["prewarm_1_a.log", "prewarm_2_b.log"]
    for name in logs:  # stopped at its gate: it never trained, scored or wrote a record
        text = (folder / name).read_text()
        assert text.rstrip().splitlines()[-1].startswith("start_gate waiting path=") and "train_done" not in text
    assert time.time() - started >= 1.5 + 3 * 1.5  # then every row still compiled (a stand-in has no cache)
    assert "`--prewarm 2`: 2 configuration(s) of ours compiled beforehand" in (folder / "table.md").read_text()
    assert "=== prewarm: 2 configuration(s) of ours, 2 at a time ===" in capsys.readouterr().out
    # a configuration that never reaches its gate is named, and its row still runs (and fails) in its turn
    table = bench.main(["--prewarm", "1", "--ours", "bad=record:crash=1", "--name", "bad", *common()])
    assert table["prewarm"][0]["failed"] == ["bad"] and table["rows"][0]["status"] == "failed"
    assert "(never reached its gate: bad)" in bench.markdown(table)
    table = bench.main(["--prewarm", "1", "--append", "--ours", "c=record", *common()])  # a later call's logs: numbered on
    assert len(table["prewarm"]) == 2 and (folder / "prewarm_3_c.log").exists() and (folder / "prewarm_1_a.log").exists()
    with pytest.raises(bench.UsageError, match="an --ours row"):
        bench.main(["--prewarm", "2", "--peer", str(tmp_path / "peer.py"), *common()])


def row_notes_of(row):
    return "; ".join(row["notes"])


def make_bench(tmp_path, protocol, seconds, nproc=1):
    return bench.Bench(protocol, seconds, nproc, 1337, "D", "T", 1024, "PD", "ours.py", 60, str(tmp_path), str(tmp_path))


def test_wall_scales_peer_step_schedules_to_the_steps_it_will_reach(setup):
    tmp_path, _ = setup
    spec = bench.parse_row_spec("peer", str(tmp_path / "peer.py") + ":MUON_MOMENTUM_WARMUP_STEPS=500")
    # 150 s on one GPU at full batch ~ 150 / (8 x 600) of a real run's steps
    cmd, env, notes = bench.plan_peer(spec, make_bench(tmp_path, "wall", 150), str(tmp_path))
    assert (env["WARMDOWN_ITERS"], env["MUON_MOMENTUM_WARMUP_STEPS"]) == ("38", "16")
    assert cmd[-1] == str(tmp_path / "peer.py") and "TRAIN_BATCH_TOKENS" not in env
    # eighth at the real run's 600 s keeps them as written
    _, env, _ = bench.plan_peer(spec, make_bench(tmp_path, "eighth", 600), str(tmp_path))
    assert (env["WARMDOWN_ITERS"], env["MUON_MOMENTUM_WARMUP_STEPS"]) == ("1200", "500")


@pytest.mark.parametrize("fa3_installed", [False, True])
def test_fa3_scripts_get_the_sdpa_fallback_only_without_fa3_and_fixed_ema_is_noted(setup, monkeypatch, fa3_installed):
    tmp_path, _ = setup
    find_spec = importlib.util.find_spec  # this machine's answer would test one case only: both are made here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (object() if fa3_installed else None)
                        if name == "flash_attn_interface" else find_spec(name, *args))
    script = tmp_path / "fa3_peer.py"
    script.write_text("from flash_attn_interface import flash_attn_func as flash_attn_3_func\n" + FAKE_PEER
                      + "def train():\n    ema_decay = 0.997\n")
    _, env, notes = bench.plan_peer(bench.parse_row_spec("peer", str(script)), make_bench(tmp_path, "wall", 1),
                                    str(tmp_path))
    assert "hard-coded EMA decay 0.997 not scaled" in notes
    if fa3_installed:  # the real FA3 runs: nothing on the path, no note
        assert "PYTHONPATH" not in env and not any("SDPA fallback" in n for n in notes)
    else:
        assert env["PYTHONPATH"].split(os.pathsep)[0] == bench.FLASH_ATTN_FALLBACK
        assert any("SDPA fallback" in n for n in notes)
    _, env, _ = bench.plan_peer(bench.parse_row_spec("peer", str(tmp_path / "peer.py")), make_bench(tmp_path, "wall", 1),
                                str(tmp_path))
    assert "PYTHONPATH" not in env


# The 1.1063 record's style: minified, single-quoted defaults, bare literals, a step-counted recurrence start.
MINIFIED_PEER = """import copy,glob,io,math,os,sys
class Hyperparameters:warmdown_iters=int(os.environ.get('WARMDOWN_ITERS',3500));train_batch_tokens=int(os.environ.get('TRAIN_BATCH_TOKENS',786432));max_wallclock_seconds=float(os.environ.get('MAX_WALLCLOCK_SECONDS',6e2));muon_momentum_warmup_steps=int(os.environ.get('MUON_MOMENTUM_WARMUP_STEPS',1500));recur_layers_str=os.environ.get('RECUR_LAYERS','').strip();recur_start_step=int(os.environ.get('RECUR_START_STEP',3000))
def main():
\tworld_size=int(os.environ.get('WORLD_SIZE','1'));grad_accum_steps=8//world_size;grad_scale=1./grad_accum_steps
\tema_state={};ema_decay=.997;step=0
"""
RECORD_1_1063_SETTINGS = ("BIGRAM_DIM=112,MIXED_QUANT=1,N_INT6_LAYERS=32,NUM_LAYERS=11,RECUR_LAYERS=4,5,"
                          "RECUR_START_STEP=3000,REPEAT_UNTIE_MLP=full,REPEAT_UNTIE_MLP_LAYERS=4,5,DISABLE_LAYER0_ATTN=1,"
                          "PARALLEL_RESIDUAL=1,PARALLEL_START_LAYER=7,POST_GPTQ_EVAL_ONLY=0")


def test_minified_peer_defaults_are_read_and_its_recurrence_start_scales_with_the_run(setup):
    tmp_path, _ = setup
    script = tmp_path / "minified.py"
    script.write_text(MINIFIED_PEER)
    assert bench.env_defaults(MINIFIED_PEER) == {"WARMDOWN_ITERS": "3500", "TRAIN_BATCH_TOKENS": "786432",
                                                 "MAX_WALLCLOCK_SECONDS": "6e2", "MUON_MOMENTUM_WARMUP_STEPS": "1500",
                                                 "RECUR_LAYERS": "", "RECUR_START_STEP": "3000", "WORLD_SIZE": "1"}
    # eighth protocol, 300 s: half of the real run's 600 s, so every step count halves
    spec = bench.parse_row_spec("peer", f"pr1204={script}:{RECORD_1_1063_SETTINGS}")
    assert spec.label == "pr1204" and spec.overrides["RECUR_LAYERS"] == "4,5"
    assert spec.overrides["REPEAT_UNTIE_MLP_LAYERS"] == "4,5" and len(spec.overrides) == 12
    (tmp_path / "work").mkdir()
    cmd, env, notes = bench.plan_peer(spec, make_bench(tmp_path, "eighth", 300), str(tmp_path / "work"))
    assert (env["RECUR_START_STEP"], env["WARMDOWN_ITERS"], env["MUON_MOMENTUM_WARMUP_STEPS"]) == ("1500", "1750", "750")
    assert env["TRAIN_BATCH_TOKENS"] == "98304" and env["MAX_WALLCLOCK_SECONDS"] == "300"
    assert env["RECUR_LAYERS"] == "4,5" and env["PARALLEL_START_LAYER"] == "7"  # unscaled: not step counts
    assert "RECUR_START_STEP 3000->1500" in notes and "hard-coded EMA decay .997 not scaled" in notes
    patched = open(cmd[-1]).read()
    assert cmd[-1] == str(tmp_path / "work" / "minified.py") and "grad_accum_steps = 1;grad_scale=1./" in patched
    # wall protocol on one GPU: the recurrence starts where a real run's step 3000 falls in this run's steps
    _, env, _ = bench.plan_peer(spec, make_bench(tmp_path, "wall", 150), str(tmp_path))
    assert env["RECUR_START_STEP"] == str(round(3000 * 150 / 600 / 8))


def test_a_peer_importing_a_module_that_is_not_installed_fails_saying_how_to_install_it(setup):
    tmp_path, common = setup
    (tmp_path / "needs.py").write_text("import copy,no_such_module_for_bench,os\nimport numpy as np,torch.nn as nn\n"
                                       "from flash_attn_interface import flash_attn_func\n" + FAKE_PEER)
    assert bench.missing_modules((tmp_path / "needs.py").read_text()) == ["no_such_module_for_bench"]
    table = bench.main(["--peer", str(tmp_path / "needs.py"), "--peer", str(tmp_path / "peer.py"), *common()])
    needs, peer = table["rows"]
    assert needs["status"] == "failed" and peer["status"] == "ok"
    assert needs["error"].startswith("needs.py imports no_such_module_for_bench, not installed here: "
                                     "pip install no_such_module_for_bench (offline: pip install --no-index")


PEER_1_1063 = os.path.join(REPO, "..", "shared", "peers", "parameter-golf",
                           "record_1.1063_parallel_residuals_recurrence_train_gpt.py")


@pytest.mark.skipif(not os.path.isfile(PEER_1_1063), reason="the 1.1063 record script is not beside the repo")
def test_the_real_1_1063_script_is_read_patched_and_scaled(tmp_path, monkeypatch):
    source = open(PEER_1_1063).read()
    defaults = bench.env_defaults(source)
    assert (defaults["RECUR_START_STEP"], defaults["WARMDOWN_ITERS"], defaults["MAX_WALLCLOCK_SECONDS"]) == ("3000", "3500", "6e2")
    assert "brotli" in bench.missing_modules(source) or importlib.util.find_spec("brotli") is not None
    monkeypatch.setattr(bench, "missing_modules", lambda source: [])  # brotli may be absent here; the plan is what matters
    spec = bench.parse_row_spec("peer", f"pr1204={PEER_1_1063}:{RECORD_1_1063_SETTINGS}")
    cmd, env, notes = bench.plan_peer(spec, make_bench(tmp_path, "eighth", 300), str(tmp_path))
    assert (env["RECUR_START_STEP"], env["WARMDOWN_ITERS"], env["TRAIN_BATCH_TOKENS"]) == ("1500", "1750", "98304")
    assert "grad_accum_steps = 1" in open(cmd[-1]).read() and "hard-coded EMA decay .997 not scaled" in notes
    tail = ["Serialized model int6+brotli: 15900000 bytes", "Total submission size int6+brotli: 15993853 bytes",
            "final_int6_roundtrip val_loss:1.9 val_bpb:1.13 eval_time:9000ms",
            "final_int6_roundtrip_exact val_loss:1.90000000 val_bpb:1.13000000",
            "final_int6_sliding_window val_loss:1.87 val_bpb:1.1063 stride:64 eval_time:90000ms",
            "final_int6_sliding_window_exact val_loss:1.87000000 val_bpb:1.10630000",
            "final_int8_zlib_roundtrip_exact val_loss:1.87000000 val_bpb:1.10630000"]
    parsed = bench.parse_peer_log(tail)
    assert (parsed["val_bpb"], parsed["eval_time_s"], parsed["artifact_bytes"]) == (1.1063, 90.0, 15993853)
    assert parsed["artifact_format"] == "int6+brotli"


def test_flash_attn_fallback_is_causal_grouped_attention_in_fa_layout():
    spec = importlib.util.spec_from_file_location("fallback", os.path.join(bench.FLASH_ATTN_FALLBACK, "flash_attn_interface.py"))
    fallback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fallback)
    g = torch.Generator().manual_seed(0)
    B, T, H, Hkv, D = 2, 5, 4, 2, 8
    q, k, v = torch.randn(B, T, H, D, generator=g), torch.randn(B, T, Hkv, D, generator=g), torch.randn(B, T, Hkv, D, generator=g)
    y = fallback.flash_attn_func(q, k, v, causal=True)
    assert y.shape == (B, T, H, D)
    k_full, v_full = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k_full) / D ** 0.5
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    expected = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v_full)
    assert torch.allclose(y, expected, atol=1e-5)


def test_peer_score_is_the_best_documented_final_line():
    record_tail = ["final_int6_roundtrip val_loss:1.9 val_bpb:1.14 eval_time:9000ms",
                   "final_int6_roundtrip_exact val_loss:1.90000000 val_bpb:1.14000000",
                   "final_int6_sliding_window val_loss:1.9 val_bpb:1.12 stride:64 eval_time:80000ms",
                   "final_int6_sliding_window_exact val_loss:1.89000000 val_bpb:1.12000000",
                   "final_int8_zlib_roundtrip_exact val_loss:1.89000000 val_bpb:1.12000000"]
    parsed = bench.parse_peer_log(record_tail)
    assert (parsed["score_line"], parsed["val_bpb"], parsed["eval_time_s"]) == ("final_int6_sliding_window_exact", 1.12, 80.0)
    with_ttt = record_tail + ["legal_ttt val_loss:1.88 val_bpb:1.1194 eval_time:400000ms",
                              "legal_ttt_exact val_loss:1.88000000 val_bpb:1.11940000"]
    assert bench.parse_peer_log(with_ttt)["score_line"] == "legal_ttt_exact"
    adapters_tail = ["final_int8_zlib_roundtrip val_loss:2.1 val_bpb:1.25 eval_time:1000ms",
                     "final_int8_zlib_roundtrip_exact val_loss:2.10000000 val_bpb:1.25000000",
                     "final_int8_zlib_roundtrip sliding val_loss:2.0 sliding val_bpb:1.19 eval_time:30000ms",
                     "final_int8_zlib_roundtrip_exact sliding val_loss:2.00000000 sliding val_bpb:1.19710000"]
    parsed = bench.parse_peer_log(adapters_tail)
    assert (parsed["val_bpb"], parsed["eval_time_s"]) == (1.1971, 30.0)
    # the challenge baseline's own 8xH100 log lines
    baseline = ["train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20",
                "step:13750/20000 train_loss:1.9910 train_time:598726ms step_avg:43.54ms",
                "step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms",
                "stopping_early: wallclock_cap train_time:600038ms step:13780/20000",
                "peak memory allocated: 10184 MiB reserved: 10200 MiB",
                "Total submission size: 67272625 bytes",
                "Total submission size int8+zlib: 15863489 bytes",
                "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms",
                "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570"]
    parsed = bench.parse_peer_log(baseline)
    assert (parsed["steps"], parsed["ms_step"], parsed["peak_mem_mib"]) == (13780, 43.54, 10184)
    assert (parsed["artifact_bytes"], parsed["val_bpb"], parsed["eval_time_s"]) == (15863489, 1.2243657, 1.401)
    assert parsed["tok_s"] == pytest.approx(524288 * 13780 / 600.038)


def test_append_adds_rows_only_under_the_same_settings_and_card(setup, monkeypatch):
    tmp_path, common = setup
    first = bench.main(["--ours", "smoke", "--name", "a", *common()])
    table = bench.main(["--ours", "smoke", "--name", "a", "--append", *common()])
    assert [r["label"] for r in table["rows"]] == ["smoke", "smoke#2"] and table["name"] == first["name"]
    with pytest.raises(bench.UsageError, match="seconds"):
        bench.main(["--ours", "smoke", "--name", "a", "--append", *common(seconds=2)])
    monkeypatch.setattr(bench, "card_name", lambda: "NVIDIA H200 (GPU-another-card)")  # the next lease's machine
    with pytest.raises(bench.UsageError, match="gpu="):
        bench.main(["--ours", "smoke", "--name", "a", "--append", *common()])


FAKE_EVAL = '''
import sys
slow = "--no-ngram" not in sys.argv
print(f"final val_bpb={1.0 if slow else 1.1} val_loss=2.0 eval_time_s={4.0 if slow else 2.0}")
'''


def test_eval_only_reports_tokens_per_second_with_and_without_ngram(setup):
    tmp_path, common = setup
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    (tmp_path / "model.pgolf").write_bytes(b"x")
    table = bench.main(["--eval-only", str(tmp_path / "model.pgolf"), "--eval-script", str(tmp_path / "eval.py"), *common()])
    plain, ngram = table["rows"]
    assert plain["tokens"] == 249 * 40 and plain["tok_s"] == pytest.approx(249 * 40 / 2.0)
    assert ngram["val_bpb"] == 1.0 and ngram["ratio_tok_s"] == pytest.approx(0.5)


def test_user_errors_end_with_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "records", "bench.py"), "--ours", "smoke",
                           "--data-dir", str(tmp_path), "--tokenizer", "bytes", "--out", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: ") and "no *_train_*.bin shards" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_our_real_smoke_preset_and_a_peer_share_a_table(setup, byte_shards):
    tmp_path, common = setup
    table = bench.main(["--peer", str(tmp_path / "peer.py"), "--ours", "smoke:eval_max_tokens=4096",
                        *common(byte_shards, ours_script=None, seconds=2)])
    peer, smoke = table["rows"]
    assert peer["status"] == smoke["status"] == "ok" and smoke["script"] == "train_gpt.py"
    assert smoke["steps"] >= 1 and 0 < smoke["val_bpb"] < 20 and 0 < smoke["artifact_bytes"] < 16_000_000
    assert smoke["eval_time_s"] is not None and smoke["ratio_bpb"] == pytest.approx(smoke["val_bpb"] / 1.5)
    assert 0 < smoke["heldout_bpb"] < 20 and "heldout_bpb" not in peer  # what settings are chosen on: ours only
    assert smoke["iterations"] == 400  # the step cap, read from the trainer's config line (what --train-tokens checks)
    folder = tmp_path / "bench" / f"{table['date']}_{table['name']}"
    header, _, peer_line, smoke_line = [line.split(" | ") for line in (folder / "table.md").read_text().splitlines()
                                        if line.startswith("|")]
    column = header.index("held-out bpb")
    assert (peer_line[column], smoke_line[column]) == ("-", f"{smoke['heldout_bpb']:.4f}")
    record_line = next(line for line in log_of(table, smoke, tmp_path).splitlines() if line.startswith("record: "))
    assert not record_line.split(" ", 1)[1].startswith(REPO)  # record folders go to a temporary place, not records/


def test_a_running_row_has_its_output_on_disk_before_it_ends(tmp_path):
    """What a row printed is in its log while it still runs, so a bench killed mid-row (the lease ended) keeps it."""
    release, log_path = tmp_path / "release", tmp_path / "row.log"
    child = f"import os, time\nprint('trained steps:3125')\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)"
    result = {}
    runner = threading.Thread(target=lambda: result.update(
        out=bench.run_logged([sys.executable, "-c", child], {}, str(tmp_path), str(log_path), timeout_s=60)))
    runner.start()
    try:
        deadline = time.time() + 30
        while not (log_path.exists() and "trained steps:3125" in log_path.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        assert "trained steps:3125" in log_path.read_text()
    finally:
        release.touch()
        runner.join()
    assert result["out"][0] == 0 and result["out"][1] == ["trained steps:3125"]


def test_recover_adds_the_row_a_cut_off_bench_never_wrote_from_its_log(setup, tmp_path):
    tmp_path, common = setup
    table = bench.main(["--peer", str(tmp_path / "peer.py"), "--name", "r", *common()])
    folder = tmp_path / "bench" / f"{table['date']}_r"
    tail = tmp_path / "tail.txt"  # what a device call returned of the log: no step lines, the final ones
    tail.write_text("# transcribed\nTotal submission size int6+brotli: 15703779 bytes\n"
                    "final_int6_sliding_window val_loss:1.7676 val_bpb:1.1309 stride:64 eval_time:30892ms\n"
                    "final_int6_sliding_window_exact val_loss:1.76759875 val_bpb:1.13093160\n")
    table = bench.main(["--recover", str(folder), str(tail), "--peer", f"late={tmp_path / 'peer.py'}:GPTQ_CALIB_SAMPLES=16"])
    peer, late = table["rows"]
    assert (late["status"], late["val_bpb"], late["artifact_bytes"], late["eval_time_s"]) == ("ok", 1.1309316, 15703779, 30.892)
    assert late["overrides"] == {"GPTQ_CALIB_SAMPLES": "16"} and late.get("ms_step") is None
    assert late["ratio_bpb"] == pytest.approx(1.1309316 / 1.5)
    assert (folder / late["log"]).read_text() == tail.read_text()
    md = (folder / "table.md").read_text()
    assert "| late |" in md and "recovered from its log" in md and "1.1309" in md
    # a log without a score is a failed row; a missing table or two rows are user errors
    (tmp_path / "empty.log").write_text("step:10/20000 train_time:1000ms step_avg:100.00ms\n")
    failed = bench.main(["--recover", str(folder), str(tmp_path / "empty.log"), "--peer", str(tmp_path / "peer.py")])
    assert failed["rows"][-1]["status"] == "failed" and failed["rows"][-1]["ms_step"] == 100.0
    with pytest.raises(bench.UsageError, match="no table"):
        bench.main(["--recover", str(tmp_path), str(tail), "--ours", "record"])
    with pytest.raises(bench.UsageError, match="exactly one"):
        bench.main(["--recover", str(folder), str(tail), "--ours", "record", "--ours", "smoke"])


def test_an_ablation_table_gives_each_row_its_held_out_bpb_against_the_first_of_ours_that_finished():
    rows = [{"label": "1.1194", "status": "ok", "val_bpb": 1.2282},  # a peer: no held-out bpb
            {"label": "crashed", "status": "failed", "error": "boom", "heldout_bpb": 1.1},
            {"label": "record", "status": "ok", "heldout_bpb": 1.2361, "val_bpb": 1.1510},
            {"label": "no_recur", "status": "ok", "heldout_bpb": 1.2330, "val_bpb": 1.1474}]
    rows = [{"script": "s", **row} for row in rows]
    assert bench.add_heldout_deltas(rows) == "record"
    assert [row["heldout_delta"] for row in rows] == [None, None, 0.0, pytest.approx(-0.0031)]
    table = {"name": "a", "date": "d", "protocol": "eighth", "seconds": 140, "nproc": 1, "seed": 1337, "data_dir": "D",
             "tokenizer": "T", "vocab_size": 1024, "gpu": "cpu", "torch": "t", "reference": None, "control": "record", "rows": rows}
    header, _, *lines = [line.split(" | ") for line in bench.markdown(table).splitlines() if line.startswith("|")]
    column = header.index("held-out vs control")
    assert [line[column] for line in lines] == ["-", "-", "+0.0000", "-0.0031"]
    assert "each row's minus record's" in bench.markdown(table)
    assert bench.add_heldout_deltas(rows[:2]) is None and rows[1]["heldout_delta"] is None


def test_a_row_says_when_its_evaluation_was_made_cheaper_and_a_cut_line_is_skipped():
    lines = ["step=100 train_loss=3.0 tok_s=1000 ms_step=50.0", "step=200 train_loss=2.9 tok_s=1100 ms_st",  # cut short
             "eval budget: learners stopped from target 5000 (projected 700 s > eval_budget_s 540)",
             "final val_bpb=1.2 val_loss=2.0 bytes_total=3000 bytes_code=1000 train_time_s=9.0 eval_time_s=500.0"]
    parsed = bench.parse_ours_log(lines)
    assert (parsed["steps"], parsed["ms_step"], parsed["val_bpb"]) == (100, 50.0, 1.2)
    assert parsed["eval_budget_steps"] == ["learners stopped from target 5000 (projected 700 s > eval_budget_s 540)"]
    row = {"label": "r", "status": "ok", "notes": ["preset record"], **parsed}
    assert bench.row_notes(row) == "preset record; eval budget: learners stopped from target 5000 (projected 700 s > eval_budget_s 540)"
