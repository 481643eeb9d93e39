"""records/diff.py: compare two record folders.

    python records/diff.py records/<track>/<date>_<a> records/<track>/<date>_<b> [--hunks N]

Prints the scores side by side (from submission.json), the config keys that differ (from config.json,
nested keys flattened as a.b.c), and what changed in the scripts the runs used (the .py copies in each folder).
"""
from __future__ import annotations

import difflib
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from eval_ngram import ArgumentParser, run_script, script_source  # noqa: E402

SCORES = ["val_bpb", "val_loss", "bytes_total", "bytes_code", "train_time_s", "eval_time_s",
          "packing_loss.loss"]  # bpb the artifact lost to packing, on held-out training text (folders since 2026-12-01)
HUNK_LINES = 30  # lines shown per hunk at most


class RecordError(Exception):
    """A folder that is not a readable record folder."""


# ---------------------------------------------------------------- reading a record


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return value


def load_record(folder: str) -> dict:
    """submission.json, flattened config and script texts of a record folder."""
    submission_path = os.path.join(folder, "submission.json")
    if not os.path.isfile(submission_path):
        raise RecordError(f"{folder} is not a record folder (no submission.json); "
                          "pass folders like records/<track>/<date>_<name>")
    submission = read_json(submission_path)
    config_path = os.path.join(folder, "config.json")
    config = read_json(config_path) if os.path.isfile(config_path) else submission.get("config") or {}
    scripts = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.py"))):  # a self-extracting copy compares as its source
        scripts[os.path.basename(path)] = script_source(path).decode("utf-8", errors="replace").splitlines(keepends=True)
    return {"submission": submission, "config": flatten(config), "scripts": scripts}


def flatten(value: dict, prefix: str = "") -> dict:
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(flatten(item, name + "."))
        else:
            flat[name] = item
    return flat


# ---------------------------------------------------------------- the three sections


def score_table(a: dict, b: dict) -> list[str]:
    def show(value):
        if isinstance(value, float):
            return f"{value:.8g}" if abs(value) < 1e7 else f"{value:.0f}"
        return "-" if value is None else str(value)

    a, b = flatten(a), flatten(b)
    lines = [f"{'score':<18}{'A':>16}{'B':>16}{'B - A':>16}"]
    for key in SCORES:
        va, vb = a.get(key), b.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        delta = show(vb - va) if numeric else "-"
        if numeric and vb - va > 0 and delta != "0":
            delta = "+" + delta
        lines.append(f"{key:<18}{show(va):>16}{show(vb):>16}{delta:>16}")
    return lines


def config_changes(a: dict, b: dict) -> list[str]:
    lines = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            lines.append(f"  {key}: {json.dumps(a[key])} -> (absent)")
        elif key not in a:
            lines.append(f"  {key}: (absent) -> {json.dumps(b[key])}")
        elif a[key] != b[key]:
            lines.append(f"  {key}: {json.dumps(a[key])} -> {json.dumps(b[key])}")
    return lines


def code_changes(a: dict, b: dict, max_hunks: int) -> list[str]:
    lines = []
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            lines.append(f"  {name}: only in {'B' if name not in a else 'A'}")
            continue
        diff = list(difflib.unified_diff(a[name], b[name], f"A/{name}", f"B/{name}", n=2))
        if not diff:
            lines.append(f"  {name}: identical")
            continue
        body = diff[2:]  # after the ---/+++ header
        added = sum(line.startswith("+") for line in body)
        removed = sum(line.startswith("-") for line in body)
        hunk_starts = [i for i, line in enumerate(body) if line.startswith("@@")] + [len(body)]
        hunks = len(hunk_starts) - 1
        lines.append(f"  {name}: +{added} -{removed} lines in {hunks} hunk{'s' * (hunks != 1)}")
        for start, end in list(zip(hunk_starts, hunk_starts[1:]))[:max_hunks]:
            hunk = [line.rstrip("\n") for line in body[start:end]]
            lines += ["    " + line for line in hunk[:HUNK_LINES]]
            if len(hunk) > HUNK_LINES:
                lines.append(f"    ... {len(hunk) - HUNK_LINES} more lines in this hunk")
        if hunks > max_hunks:
            lines.append(f"    ... {hunks - max_hunks} more hunks (diff the files for all of them)")
    return lines


def compare(folder_a: str, folder_b: str, max_hunks: int = 3) -> str:
    a, b = load_record(folder_a), load_record(folder_b)
    config = config_changes(a["config"], b["config"])
    out = [f"A: {folder_a}", f"B: {folder_b}", ""]
    out += score_table(a["submission"], b["submission"]) + [""]
    out += [f"config: {len(config)} key{' differs' if len(config) == 1 else 's differ'}" + (":" if config else "")]
    out += config + [""]
    out += ["code:"] + (code_changes(a["scripts"], b["scripts"], max_hunks) or ["  no scripts in either folder"])
    return "\n".join(out)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description="Compare two record folders: scores, config differences, code diff.")
    parser.add_argument("a", metavar="A", help="record folder, e.g. records/track_10min_16mb/2026-01-01_baseline")
    parser.add_argument("b", metavar="B", help="the record folder to compare it with")
    parser.add_argument("--hunks", type=int, default=3, metavar="N", help="diff hunks shown per script (default 3)")
    args = parser.parse_args(argv)
    print(compare(args.a, args.b, args.hunks))


if __name__ == "__main__":
    run_script(main, RecordError)
