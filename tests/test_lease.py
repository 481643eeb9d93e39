"""records/bench/lease/: the device-side scripts. A broken one costs a whole 30-minute lease, so before any lease:
every script parses as bash, every row of ours a job names resolves to a valid configuration of our trainer, and every
evaluation grid a job hands records/tune_mix.py is one it accepts."""
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "records"))
import bench
import train_gpt
import tune_mix

LEASE = os.path.join(REPO, "records", "bench", "lease")
SCRIPTS = sorted(glob.glob(os.path.join(LEASE, "*.sh")))


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_every_lease_script_parses(script):
    assert subprocess.run(["bash", "-n", script], capture_output=True, text=True).returncode == 0


def ours_rows(text: str) -> list[str]:
    """The --ours specs a script passes, in its lines and in its usage comments (none holds a space)."""
    return [row for row in re.findall(r'--ours\s+"?([^\s"]+)"?', text) if "KEY=V" not in row]  # not a placeholder


@pytest.mark.parametrize("name", ["job_ablation.sh", "job_table.sh"])
def test_every_row_of_ours_a_job_names_is_a_valid_config(name):
    rows = ours_rows(open(os.path.join(LEASE, name)).read())
    assert len(rows) == (24 if name == "job_ablation.sh" else 1)  # parts 1, 2, 4, recur300/600, part 3 (momentum) in its usage line; the table's record
    for text in rows:
        spec = bench.parse_row_spec("ours", text)
        cfg, _ = train_gpt.resolve_config(spec.target, [f"{k}={v}" for k, v in spec.overrides.items()])
        for key, value in spec.overrides.items():  # each override took: a misspelt key or value would fail above
            assert str(getattr(cfg, key)).lower() == value.lower() or getattr(cfg, key) == type(getattr(cfg, key))(value), (text, key)


def test_the_scripts_a_job_calls_are_all_here():
    for script in SCRIPTS:
        for called in re.findall(r"\.devdata/(\w+\.sh)", open(script).read()):
            assert os.path.isfile(os.path.join(LEASE, called)), (os.path.basename(script), called)


def test_every_evaluation_grid_a_job_names_is_one_tune_mix_accepts():
    """Each part's evals=(...) with the --grid items the tune_mix line adds to all of them (a grid tune_mix refuses
    would end a part's evaluations after its whole lease of training)."""
    text = open(os.path.join(LEASE, "job_ablation.sh")).read()
    grids = [re.findall(r"--grid\s+(\S+)", body) for body in re.findall(r"evals=\(([^)]*)\)", text)]
    command = re.search(r"python records/tune_mix\.py .*\\\n.*", text).group()  # its line and the one it continues on
    shared = re.findall(r"--grid\s+([^\s\"]+)", command)
    assert [len(g) for g in grids] == [0, 2, 3] and shared == ["gate_bias=-7"]  # the default, parts 1 and 4; all parts
    for items in grids[1:]:
        assert set(tune_mix.parse_grid(items + shared)) == {item.split("=")[0] for item in items + shared}
