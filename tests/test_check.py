"""records/check.py (./run.sh check FOLDER): a record folder that follows the challenge's rules passes with one OK
line; each broken one gets exactly the problem line it deserves and exit code 1. Folders in both log styles: our
train_gpt.py's and a challenge-style script's (lines as in the challenge's own baseline log)."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "records"))
import check

TRAIN_SCRIPT = "print('train')\n"
EVAL_SCRIPT = "x = 1\n"
ARTIFACT_BYTES = 1000
CODE = len(TRAIN_SCRIPT) + len(EVAL_SCRIPT)


def our_log(train_s=599.8, eval_s=300.0, bpb="1.234567", seed=1337):
    return "\n".join([
        "preset=record world=8 device=8x NVIDIA H100 accum=1 folder=records/x",
        "config " + json.dumps({"seed": seed, "num_layers": 9}),
        "step=50 train_loss=3.0 tok_s=1000 ms_step=10.0 mfu=n/a elapsed_s=0.5 eta_s=599.5",
        f"train_done steps=100 peak_mem_mib=0 tok_s=1000 ms_step=10.0 train_time_s={train_s} epochs=0",
        f"artifact bytes={ARTIFACT_BYTES} code_bytes={CODE} total={CODE + ARTIFACT_BYTES} limit=16000000",
        "audit positions=64 max_abs_sum_err=1.0e-16 PASS",
        "record: records/x",
        f"final val_bpb={bpb} val_loss=2.000000 bytes_total={CODE + ARTIFACT_BYTES} bytes_code={CODE} "
        f"train_time_s={train_s} eval_time_s={eval_s}"]) + "\n"


@pytest.fixture
def good(tmp_path):
    """A record folder as our train_gpt.py writes it, with the github_id filled in."""
    folder = tmp_path / "track_10min_16mb" / "2026-11-30_record_seed1337"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# record\n\nReproduce: python train_gpt.py\n")
    (folder / "train_gpt.py").write_text(TRAIN_SCRIPT)
    (folder / "eval_ngram.py").write_text(EVAL_SCRIPT)
    (folder / "artifact.pgolf").write_bytes(b"\x01" * ARTIFACT_BYTES)
    (folder / "train_seed1337.log").write_text(our_log())
    (folder / "config.json").write_text("{}")
    submission = {"author": "A. Golfer", "github_id": "agolfer", "name": folder.name, "blurb": "record preset",
                  "date": "2026-11-30T12:00:00+00:00", "val_loss": 2.0, "val_bpb": 1.2345671,
                  "bytes_total": CODE + ARTIFACT_BYTES, "bytes_code": CODE, "config": {"seed": 1337},
                  "hardware": "8x NVIDIA H100", "seed": 1337, "train_time_s": 599.8, "eval_time_s": 300.0}
    (folder / "submission.json").write_text(json.dumps(submission))
    return folder


def run_check(folder):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check.main([str(folder)])
    return code, out.getvalue().strip().splitlines()


def edit_submission(folder, **changes):
    submission = json.loads((folder / "submission.json").read_text())
    for key, value in changes.items():
        if value is None:
            del submission[key]
        else:
            submission[key] = value
    (folder / "submission.json").write_text(json.dumps(submission))


def test_a_good_folder_passes_with_one_ok_line(good):
    code, lines = run_check(good)
    assert code == 0 and lines == [f"OK {good}: val_bpb 1.2345671, bytes_total {CODE + ARTIFACT_BYTES} (code {CODE}), "
                                   "train 599.8 s, eval 300.0 s, seeds [1337]"]


def over_the_cap(folder):
    with open(folder / "artifact.pgolf", "r+b") as f:
        f.truncate(16_000_000)  # sparse: no 16 MB written
    (folder / "train_seed1337.log").write_text(our_log().replace(f"artifact bytes={ARTIFACT_BYTES}",
                                                                 "artifact bytes=16000000"))
    edit_submission(folder, bytes_total=16_000_000 + CODE)


BROKEN = {
    "no README": (lambda f: (f / "README.md").unlink(), "README.md is missing"),
    "empty README": (lambda f: (f / "README.md").write_text("\n"), "README.md is empty"),
    "no train_gpt.py": (lambda f: (f / "train_gpt.py").rename(f / "train_gpt_v2.py"), "train_gpt.py is missing"),
    "no log": (lambda f: (f / "train_seed1337.log").unlink(), "no train log (*.log)"),
    "script does not parse": (lambda f: (f / "eval_ngram.py").write_text("x = (\n"),  # same size
                              "eval_ngram.py does not parse (SyntaxError"),
    "field missing": (lambda f: edit_submission(f, blurb=None), "submission.json: no 'blurb'"),
    "github_id empty": (lambda f: edit_submission(f, github_id=""), "submission.json: 'github_id' must be a non-empty string, not ''"),
    "val_bpb a string": (lambda f: edit_submission(f, val_bpb="1.2345671"), "submission.json: 'val_bpb' must be a number"),
    "bytes_total a float": (lambda f: edit_submission(f, bytes_total=1026.0), "submission.json: 'bytes_total' must be an integer"),
    "date not a date": (lambda f: edit_submission(f, date="yesterday"), "submission.json: 'date' 'yesterday' is not an ISO date"),
    "bytes_total wrong": (lambda f: edit_submission(f, bytes_total=999),
                          f"submission.json bytes_total 999 but the folder's files give {CODE + ARTIFACT_BYTES} "
                          f"({CODE} code + {ARTIFACT_BYTES} model)"),
    "script edited after the run": (lambda f: (f / "train_gpt.py").write_text(TRAIN_SCRIPT + "# tuned\n"),
                                    f"submission.json bytes_code {CODE} but the folder's scripts "
                                    f"(eval_ngram.py, train_gpt.py) have {CODE + 8} bytes",
                                    f"submission.json bytes_total {CODE + ARTIFACT_BYTES} but the folder's files give "
                                    f"{CODE + 8 + ARTIFACT_BYTES}"),
    "artifact replaced": (lambda f: (f / "artifact.pgolf").write_bytes(b"\x02" * 900),
                          "artifact.pgolf has 900 bytes but the log reports 1000",
                          f"submission.json bytes_total {CODE + ARTIFACT_BYTES} but the folder's files give {CODE + 900}"),
    "over the byte cap": (over_the_cap, f"{16_000_000 + CODE} bytes in total is over the 16,000,000-byte cap by {CODE}"),
    "training too long": (lambda f: (f / "train_seed1337.log").write_text(our_log(train_s=700.0)),
                          "train_seed1337.log: training took 700.0 s, over the 600 s limit",
                          "submission.json train_time_s 599.8 but the log says 700.0"),
    "evaluation too long": (lambda f: [(f / "train_seed1337.log").write_text(our_log(eval_s=612.5)),
                                       edit_submission(f, eval_time_s=612.5)],
                            "train_seed1337.log: evaluation took 612.5 s, over the 600 s limit"),
    "seed not the log's": (lambda f: edit_submission(f, seed=42),
                           "submission.json lists seeds [42] but the logs are of seeds [1337]"),
    "score not the log's": (lambda f: edit_submission(f, val_bpb=1.2),
                            "submission.json val_bpb 1.2 but the log's final score is 1.234567"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_folder_gets_exactly_its_problem_lines_and_exit_1(good, case):
    damage, *expected = BROKEN[case]
    damage(good)
    code, lines = run_check(good)
    assert code == 1
    assert len(lines) == len(expected) and all(line.startswith(f"{good}: {e}") for line, e in zip(lines, expected)), lines


def test_a_folder_not_named_by_date_and_a_second_seed_log_that_disagrees(good):
    renamed = good.parent / "my_record"
    good.rename(renamed)
    (renamed / "train_seed7.log").write_text(our_log(seed=7, bpb="1.300000"))
    (renamed / "train_seed8.log").write_text(our_log(seed=9))
    edit_submission(renamed, seeds=[1337, 7, 8], seed=None)
    code, lines = run_check(renamed)
    assert code == 1 and lines == [
        f"{renamed}: folder name 'my_record' is not YYYY-MM-DD_description",
        f"{renamed}: train_seed8.log: named for seed 8 but the log says seed 9",
        f"{renamed}: submission.json val_bpb 1.2345671 but the mean of the 3 logs' scores is 1.256378"]


# The challenge's baseline record: its log's lines, its submission.json, a script of the size it reports.
CHALLENGE_LOG = """seed:1337
step:13750/20000 train_loss:1.9910 train_time:598726ms step_avg:43.54ms
step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
Serialized model: 67224983 bytes
Code size: 47642 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
"""


def test_a_challenge_style_folder_is_read_from_its_log(tmp_path):
    folder = tmp_path / "2026-03-17_NaiveBaseline"
    folder.mkdir()
    (folder / "README.md").write_text("Naive baseline\n")
    (folder / "train_gpt.py").write_text("#" * 47641 + "\n")
    (folder / "train.log").write_text(CHALLENGE_LOG)
    (folder / "submission.json").write_text(json.dumps({
        "author": "Baseline", "github_id": "openai", "name": "Naive Baseline", "blurb": "SP-1024 9x512",
        "date": "2026-03-18T14:56:29Z", "val_loss": 2.07269931, "val_bpb": 1.2243657, "bytes_total": 15863489,
        "bytes_code": 47642}))
    code, lines = run_check(folder)
    assert code == 0 and lines == [f"OK {folder}: val_bpb 1.2243657, bytes_total 15863489 (code 47642), "
                                   "train 600.0 s, eval 1.4 s, seeds [1337]"]
    (folder / "train.log").write_text(CHALLENGE_LOG.replace("train_time:600038ms", "train_time:650000ms")
                                      + "final_int6_sliding_window val_loss:2.0 val_bpb:1.2 eval_time:620000ms\n")
    code, lines = run_check(folder)
    assert code == 1 and lines == [f"{folder}: train.log: training took 650.0 s, over the 600 s limit",
                                   f"{folder}: train.log: evaluation took 621.4 s, over the 600 s limit"]


def test_run_sh_check_passes_its_arguments_and_exit_code(good, tmp_path):
    missing = tmp_path / "nothing_here"
    proc = subprocess.run(["./run.sh", "check", str(good), str(missing)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [f"OK {good}: val_bpb 1.2345671, bytes_total {CODE + ARTIFACT_BYTES} "
                                        f"(code {CODE}), train 599.8 s, eval 300.0 s, seeds [1337]",
                                        f"{missing}: not a folder"]
