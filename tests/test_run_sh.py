"""./run.sh, the front door: without a GPU it runs the smoke preset on local text end to end and writes a
complete record folder; two such folders diff; anything it does not know is a usage error."""
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


@pytest.mark.skipif(not os.path.exists(os.path.join(REPO_ROOT, "train_gpt.py")),
                    reason="train_gpt.py (the trainer with the smoke preset) is not in the tree yet")
def test_cpu_mode_runs_the_smoke_preset_and_writes_a_complete_record(tmp_path):
    records = tmp_path / "records"
    # No GPU visible: the CPU mode, whatever this machine has. The smoke preset's 25 s of training cut to 5 s
    # by a key=value word, which run.sh hands to train_gpt.py.
    proc = run_sh("max_wallclock_seconds=5", env={"RUNSH_RECORDS_DIR": str(records), "CUDA_VISIBLE_DEVICES": ""},
                  timeout=300)
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
