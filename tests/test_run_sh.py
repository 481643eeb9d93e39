"""./run.sh, the front door: without a GPU it runs the smoke preset on local text end to end and writes a
complete record folder that passes ./run.sh check; two such folders diff; with GPUs but no FineWeb (the GPU count
faked, on CPU) it says why and how to get FineWeb, then runs the record architecture on local text with the
one-of-eight batch; anything it does not know is a usage error."""
import json
import os
import re
import shutil
import subprocess

import pytest

import eval_ngram

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBMISSION_FIELDS = ["author", "github_id", "name", "blurb", "date", "val_loss", "val_bpb", "bytes_total", "bytes_code",
                     "config", "hardware", "seed", "train_time_s", "eval_time_s"]
FINAL_LINE = re.compile(r"final val_bpb=(\S+) val_loss=(\S+) bytes_total=(\d+) bytes_code=(\d+) "
                        r"train_time_s=(\S+) eval_time_s=(\S+)")


def run_sh(*args, env=None, timeout=60):
    return subprocess.run(["./run.sh", *args], cwd=REPO_ROOT, env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["bogus"], ["diff", "only_one_folder"], ["seq_len=128", "oops"]])
def test_unknown_words_print_usage_and_exit_2(args):
    proc = run_sh(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and "./run.sh test" in proc.stderr


def test_cpu_mode_runs_the_smoke_preset_and_writes_a_complete_record(tmp_path):
    records = tmp_path / "records"
    # No GPU visible: the CPU mode, whatever this machine has. The smoke preset's 25 s of training cut to 5 s
    # by a key=value word, which run.sh hands to train_gpt.py.
    proc = run_sh("max_wallclock_seconds=5", "github_id=tester",
                  env={"RUNSH_RECORDS_DIR": str(records), "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run.sh: mode smoke (no CUDA GPU)" in proc.stdout

    record_line, final_line = proc.stdout.strip().splitlines()[-2:]
    assert record_line.startswith(f"record: {records}{os.sep}smoke{os.sep}")
    folder = record_line.removeprefix("record: ")
    final = FINAL_LINE.fullmatch(final_line)
    assert final, final_line
    with open(os.path.join(folder, "submission.json")) as f:
        submission = json.load(f)
    assert [key for key in SUBMISSION_FIELDS if key not in submission] == []
    assert submission["config"]["max_wallclock_seconds"] == 5.0 and submission["preset"] == "smoke"
    assert f"{submission['val_bpb']:.6f}" == final.group(1) and submission["bytes_total"] == int(final.group(3))
    assert 0 < submission["val_bpb"] < 8
    files = os.listdir(folder)
    assert {"README.md", "config.json", f"train_seed{submission['seed']}.log"} <= set(files)
    assert any(name.startswith("loss_curve.") for name in files)
    for script in ("train_gpt.py", "eval_ngram.py"):  # self-extracting copies of exactly what ran
        with open(os.path.join(REPO_ROOT, script), "rb") as run:
            assert eval_ngram.script_source(os.path.join(folder, script)) == run.read()
    assert submission["bytes_code"] == sum(os.path.getsize(os.path.join(folder, s)) for s in ("train_gpt.py", "eval_ngram.py"))
    proc = run_sh("check", folder)  # the folder our trainer writes follows the challenge's rules
    assert proc.returncode == 0 and proc.stdout.startswith(f"OK {folder}: "), proc.stdout

    # A second record with one key changed: ./run.sh diff names that key.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    config["seq_len"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    proc = run_sh("diff", folder, str(other))
    assert proc.returncode == 0, proc.stderr
    assert f"seq_len: {config['seq_len'] // 2} -> {config['seq_len']}" in proc.stdout
    assert "config: 1 key differs:" in proc.stdout


@pytest.mark.skipif(os.path.isdir(os.path.join(REPO_ROOT, "data", "datasets", "fineweb10B_sp1024")),
                    reason="FineWeb is here: run.sh would make a real record attempt")
def test_gpu_mode_without_fineweb_says_why_and_runs_the_record_architecture_on_local_text(tmp_path):
    records = tmp_path / "records"
    env = {"RUNSH_RECORDS_DIR": str(records), "RUNSH_TEST_GPU_COUNT": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "RUNSH_GPU_SECONDS": "2",
           "RUNSH_GPU_EVAL_TOKENS": "2048", "RUNSH_MAX_BYTES": "200000"}
    # The record architecture shrunk to run on CPU; every other key is the record preset's. Width 128 makes the token
    # embedding (1024 x 128) big enough to be packed at int8: at width 32 every tensor was stored fp16, which moved the
    # score by under 1e-5 bpb and on one CI run not at all.
    tiny = ["num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=128", "num_heads=4", "num_kv_heads=2", "enrich_hidden=32", "bigram_buckets=64",
            "bigram_dim=8", "seq_len=64", "train_batch_tokens=512", "eval_stride=32", "compile=off",
            "compile_warmup_steps=2", "log_every=5", "github_id=tester", "train_holdout_tokens=4096"]
    proc = run_sh(*tiny, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "error: cannot download datasets/manifest.json" in proc.stderr  # fineweb.py's own line says why
    assert "run.sh: no FineWeb record attempt: FineWeb sp1024 is neither in data/datasets/fineweb10B_sp1024" in out
    assert "python data/fineweb.py --variant sp1024 --train-shards 80" in out
    assert "run.sh: mode local-gpu: the record architecture on 1 GPU(s) and local text" in out
    # one of eight GPUs of a real run: the record preset's 786,432-token batch / 8, no accumulation; the user's
    # key=value words come last and win
    command = next(line for line in out.splitlines() if line.startswith("run.sh: ") and " train_gpt.py " in line)
    assert re.search(r" train_gpt\.py track=local_gpu data_dir=data/local/\w+_max200000 tokenizer=\S+ vocab_size=\d+ "
                     r"max_wallclock_seconds=2 train_batch_tokens=98304 grad_accum_steps=1 eval_max_tokens=2048 "
                     r"records_dir=\S+ num_layers=2 ", command), command
    assert re.search(r"^warmup compile_steps=2 seconds=\S+ \(not counted\)$", out, re.M)  # compiled outside the clock
    assert re.search(r"^step=\d+ train_loss=\S+ .* elapsed_s=\S+ eta_s=\S+$", out, re.M)
    assert re.search(r"^packing_loss holdout_tokens=4096 bpb_trained=\S+ bpb_packed=\S+ loss=[+-]\S+ seconds=\S+$", out, re.M)

    record_line, final_line = out.strip().splitlines()[-2:]
    assert record_line.startswith(f"record: {records}{os.sep}local_gpu{os.sep}")
    assert FINAL_LINE.fullmatch(final_line), final_line
    folder = record_line.removeprefix("record: ")
    with open(os.path.join(folder, "submission.json")) as f:
        submission = json.load(f)
    assert submission["preset"] == "record" and submission["config"]["train_batch_tokens"] == 512
    assert submission["config"]["eval_max_tokens"] == 2048 and submission["config"]["max_wallclock_seconds"] == 2.0
    packing = submission["packing_loss"]  # the trained weights against the artifact's: int8 rounding of the embedding moves the score
    assert packing["holdout_tokens"] == 4096 and packing["bpb_packed"] != packing["bpb_trained"]
    assert 0 < submission["val_bpb"] < 10
    assert run_sh("check", folder).returncode == 0


def test_help_lists_every_command_and_the_environment_and_exits_0():
    proc = run_sh("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for command in ("./run.sh test", "./run.sh diff A B", "./run.sh check FOLDER", "./run.sh bench",
                    "RUNSH_GPU_SECONDS", "RUNSH_TEST_GPU_COUNT"):
        assert command in proc.stdout
