"""records/check.py: check record folders against the challenge's submission rules before opening a PR.

    python records/check.py FOLDER [FOLDER ...]        # or: ./run.sh check FOLDER

One line per problem (`FOLDER: what is wrong`), exit code 1 if there is any; otherwise one `OK` line per folder
and exit code 0. The rules are the public challenge's (its README: submission process and FAQ):
- the folder is named YYYY-MM-DD_description (a real date, a description without spaces);
- README.md (not empty), submission.json, train_gpt.py and at least one train log (*.log) are present, and every
  .py file in the folder parses (broken scripts are not accepted);
- submission.json holds author, github_id, name, blurb, date (non-empty strings), val_loss, val_bpb (numbers),
  bytes_total, bytes_code (integers); seed / seeds, train_time_s, eval_time_s, hardware and config, where present,
  have the right types;
- bytes: code = the sizes of the folder's .py files; model = the artifact in the folder (*.pgolf, *.ptz) or, when
  it holds none (artifacts are rarely committed), the compressed size the log reports; code must equal bytes_code,
  code + model must equal bytes_total and be <= 16,000,000;
- every log: training and evaluation each within 600 s (the clock is read between steps, so a run stops a
  fraction of a step past it: the challenge's own baseline log says 600.038 s; TIME_SLACK_S allows that);
- the seeds submission.json lists are exactly the logs' seeds (train_seed<S>.log, or the seed the log states);
- val_bpb is the log's final score (the mean of the logs' scores when there are several), and train_time_s /
  eval_time_s, where present, are the log's.
Logs may come from our train_gpt.py (`final val_bpb=...` lines) or from a challenge-style script
(`step:N/M ... train_time:Tms`, `final_..._exact val_loss:... val_bpb:...`).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import key_values, parse_ours_log, parse_peer_log  # noqa: E402
from eval_ngram import ArgumentParser, run_script  # noqa: E402

BYTE_LIMIT = 16_000_000
TIME_LIMIT_S = 600.0
TIME_SLACK_S = 1.0
SCORE_TOLERANCE = 1e-4  # submission.json may round val_bpb to 4 decimals
REQUIRED_STRINGS = ("author", "github_id", "name", "blurb", "date")
REQUIRED_NUMBERS = ("val_loss", "val_bpb")
REQUIRED_INTEGERS = ("bytes_total", "bytes_code")
FOLDER_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\S+)$")
ARTIFACT_PATTERNS = ("*.pgolf", "*.ptz")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- reading a log
def read_log(path: str) -> dict:
    """What a train log says: seed, training and evaluation seconds, final val_bpb, compressed model bytes."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip("\n") for line in f]
    facts: dict = {"seed": None, "train_s": None, "eval_s": None, "val_bpb": None, "model_bytes": None}
    if any(line.startswith("final val_bpb=") for line in lines):  # our train_gpt.py
        parsed = parse_ours_log(lines)
        facts.update(train_s=parsed.get("train_time_s"), eval_s=parsed.get("eval_time_s"), val_bpb=parsed.get("val_bpb"))
        for line in lines:
            if line.startswith("config {"):
                facts["seed"] = json.loads(line[len("config "):]).get("seed")
            elif line.startswith("artifact bytes="):
                facts["model_bytes"] = int(key_values(line)["bytes"])
        return facts
    parsed = parse_peer_log(lines)  # a challenge-style script
    facts.update(train_s=parsed.get("train_time_s"), val_bpb=parsed.get("val_bpb"))
    # every scoring pass counts against the evaluation limit, not only the one the score comes from
    passes = [float(m[1]) / 1000 for line in lines
              if line.startswith(("final_", "legal_ttt")) and (m := re.search(r"\beval_time:([\d.]+)ms", line))]
    facts["eval_s"] = sum(passes) if passes else None
    for line in lines:
        if m := re.match(r"^seed:(\d+)\s*$", line):
            facts["seed"] = int(m[1])
        elif m := re.match(r"^Serialized model \S+\+\S+: (\d+) bytes", line):  # compressed (int8+zlib, int6+brotli)
            facts["model_bytes"] = int(m[1])
    return facts


# ---------------------------------------------------------------- the checks
def check_submission_fields(submission) -> list[str]:
    if not isinstance(submission, dict):
        return ["submission.json: not a JSON object"]
    problems = []
    for key in REQUIRED_STRINGS + REQUIRED_NUMBERS + REQUIRED_INTEGERS:
        if key not in submission:
            problems.append(f"submission.json: no '{key}'")
    for key in REQUIRED_STRINGS:
        if key in submission and not (isinstance(submission[key], str) and submission[key].strip()):
            problems.append(f"submission.json: '{key}' must be a non-empty string, not {submission[key]!r}")
    for key in REQUIRED_NUMBERS + ("train_time_s", "eval_time_s"):
        if key in submission and not is_number(submission[key]):
            problems.append(f"submission.json: '{key}' must be a number, not {submission[key]!r}")
    for key in REQUIRED_INTEGERS + ("seed",):
        if key in submission and not (isinstance(submission[key], int) and not isinstance(submission[key], bool)):
            problems.append(f"submission.json: '{key}' must be an integer, not {submission[key]!r}")
    if "seeds" in submission and not (isinstance(submission["seeds"], list) and submission["seeds"] and
                                      all(isinstance(s, int) and not isinstance(s, bool) for s in submission["seeds"])):
        problems.append(f"submission.json: 'seeds' must be a non-empty list of integers, not {submission['seeds']!r}")
    for key, kind in (("hardware", str), ("config", dict)):
        if key in submission and not isinstance(submission[key], kind):
            problems.append(f"submission.json: '{key}' must be a {'string' if kind is str else 'JSON object'}")
    if isinstance(submission.get("date"), str) and submission["date"].strip():
        try:
            datetime.datetime.fromisoformat(submission["date"].replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"submission.json: 'date' {submission['date']!r} is not an ISO date")
    return problems


def listed_seeds(submission: dict) -> set[int] | None:
    if isinstance(submission.get("seeds"), list):
        return set(submission["seeds"])
    if isinstance(submission.get("seed"), int):
        return {submission["seed"]}
    return None


def check_folder(folder: str) -> tuple[list[str], str]:
    """(problems, summary) for one record folder."""
    if not os.path.isdir(folder):
        return ["not a folder"], ""
    problems = []
    name = os.path.basename(os.path.normpath(folder))
    m = FOLDER_NAME.match(name)
    try:
        if not m:
            raise ValueError
        datetime.date.fromisoformat(m[1])
    except ValueError:
        problems.append(f"folder name {name!r} is not YYYY-MM-DD_description")

    def present(file_name: str) -> bool:
        if not os.path.isfile(os.path.join(folder, file_name)):
            problems.append(f"{file_name} is missing")
            return False
        return True

    if present("README.md") and not open(os.path.join(folder, "README.md"), encoding="utf-8",
                                         errors="replace").read().strip():
        problems.append("README.md is empty: explain the submission and how to reproduce it")
    present("train_gpt.py")
    scripts = sorted(glob.glob(os.path.join(folder, "*.py")))
    for path in scripts:
        try:
            with open(path, "rb") as f:
                ast.parse(f.read(), filename=path)
        except (SyntaxError, ValueError) as e:
            problems.append(f"{os.path.basename(path)} does not parse ({type(e).__name__}: {e})")
    logs = sorted(glob.glob(os.path.join(folder, "*.log")))
    if not logs:
        problems.append("no train log (*.log): commit the log the run wrote")

    submission = {}
    if present("submission.json"):
        try:
            with open(os.path.join(folder, "submission.json"), encoding="utf-8") as f:
                submission = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(f"submission.json is not valid JSON ({e})")
        problems += check_submission_fields(submission)
        if not isinstance(submission, dict):
            submission = {}

    facts = {os.path.basename(path): read_log(path) for path in logs}
    for log, fact in facts.items():
        seed_in_name = re.search(r"seed(\d+)", log)
        if seed_in_name and fact["seed"] is not None and int(seed_in_name[1]) != fact["seed"]:
            problems.append(f"{log}: named for seed {seed_in_name[1]} but the log says seed {fact['seed']}")
        if seed_in_name:
            fact["seed"] = int(seed_in_name[1])
        for what, key in (("training", "train_s"), ("evaluation", "eval_s")):
            if fact[key] is None:
                problems.append(f"{log}: no {what} time in the log")
            elif fact[key] > TIME_LIMIT_S + TIME_SLACK_S:
                problems.append(f"{log}: {what} took {fact[key]:.1f} s, over the {TIME_LIMIT_S:.0f} s limit")
        if fact["val_bpb"] is None:
            problems.append(f"{log}: no final val_bpb line")

    seeds = listed_seeds(submission)
    log_seeds = {fact["seed"] for fact in facts.values()}
    if seeds is not None and logs and seeds != log_seeds:
        problems.append(f"submission.json lists seeds {sorted(seeds)} but the logs are of seeds "
                        f"{sorted(s for s in log_seeds if s is not None) or 'unknown'}")

    scores = [fact["val_bpb"] for fact in facts.values() if fact["val_bpb"] is not None]
    if scores and is_number(submission.get("val_bpb")):
        expected = sum(scores) / len(scores)
        if abs(submission["val_bpb"] - expected) > SCORE_TOLERANCE:
            source = "the log's final score" if len(scores) == 1 else f"the mean of the {len(scores)} logs' scores"
            problems.append(f"submission.json val_bpb {submission['val_bpb']} but {source} is {expected:.6f}")
    if len(facts) == 1:
        [fact] = facts.values()
        for key, log_key in (("train_time_s", "train_s"), ("eval_time_s", "eval_s")):
            if is_number(submission.get(key)) and fact[log_key] is not None and abs(submission[key] - fact[log_key]) > 1:
                problems.append(f"submission.json {key} {submission[key]} but the log says {fact[log_key]:.1f}")

    code = sum(os.path.getsize(path) for path in scripts)
    artifacts = sorted(p for pattern in ARTIFACT_PATTERNS for p in glob.glob(os.path.join(folder, pattern)))
    if len(artifacts) > 1:
        problems.append(f"several artifacts ({', '.join(map(os.path.basename, artifacts))}): keep the scored one")
    if artifacts:
        model_sizes = {os.path.getsize(artifacts[0])}
        [fact] = facts.values() if len(facts) == 1 else [{}]  # several seeds: the artifact is one of theirs
        if fact.get("model_bytes") not in (None, *model_sizes):
            problems.append(f"{os.path.basename(artifacts[0])} has {os.path.getsize(artifacts[0])} bytes but the log "
                            f"reports {fact['model_bytes']}")
    else:
        model_sizes = {fact["model_bytes"] for fact in facts.values() if fact["model_bytes"] is not None}
    totals = sorted(code + size for size in model_sizes)
    if isinstance(submission.get("bytes_code"), int) and submission["bytes_code"] != code:
        problems.append(f"submission.json bytes_code {submission['bytes_code']} but the folder's scripts "
                        f"({', '.join(map(os.path.basename, scripts)) or 'none'}) have {code} bytes")
    if not totals:
        problems.append("bytes_total cannot be recomputed: no artifact (*.pgolf, *.ptz) in the folder and no log "
                        "reports the compressed model size")
    else:
        if isinstance(submission.get("bytes_total"), int) and submission["bytes_total"] not in totals:
            recomputed = " or ".join(f"{t} ({code} code + {t - code} model)" for t in totals)
            problems.append(f"submission.json bytes_total {submission['bytes_total']} but the folder's files give "
                            f"{recomputed}")
        if totals[-1] > BYTE_LIMIT:
            problems.append(f"{totals[-1]} bytes in total is over the {BYTE_LIMIT:,}-byte cap by {totals[-1] - BYTE_LIMIT}")
    summary = (f"val_bpb {submission.get('val_bpb')}, bytes_total {totals[-1] if totals else '?'} (code {code}), "
               f"train {max((f['train_s'] or 0 for f in facts.values()), default=0):.1f} s, "
               f"eval {max((f['eval_s'] or 0 for f in facts.values()), default=0):.1f} s, "
               f"seeds {sorted(s for s in log_seeds if s is not None)}")
    return problems, summary


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="records/check.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="FOLDER", help="a record folder, e.g. records/<track>/<date>_<name>")
    args = parser.parse_args(argv)
    failed = False
    for folder in args.folders:
        problems, summary = check_folder(folder)
        for problem in problems:
            print(f"{folder}: {problem}")
        if not problems:
            print(f"OK {folder}: {summary}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    run_script(main)
