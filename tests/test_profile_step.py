"""records/profile_step.py: the step as training runs it, timed and reduced to a table (on CPU: no GPU columns)."""
import json
import os
import sys

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "records"))
import profile_step  # noqa: E402


def test_a_profile_times_steps_lists_the_phases_and_writes_its_table(sp1024_shards, tmp_path):
    result = profile_step.profile(["--data-dir", sp1024_shards, "--preset", "smoke", "--steps", "2", "--trace-steps", "1",
                                   "--label", "tiny", "--out", str(tmp_path), "seq_len=64", "train_batch_tokens=512"])
    assert result["tokens_per_step"] == 512 and result["ms_step_min"] <= result["ms_step_median"] <= result["ms_step_max"]
    assert {p["phase"] for p in result["phases"]} == {"step.forward_backward", "step.optimizer", "step.ema"}
    assert result["kernels"] == [] and result["gpu"] == "cpu"  # no CUDA device: no kernel rows, nothing invented
    table = (tmp_path / "profile_tiny.md").read_text()
    assert "| ms/step median (min-max) | MFU |" in table and "| step.optimizer |" in table
    assert json.loads((tmp_path / "profile_tiny.json").read_text())["label"] == "tiny"
