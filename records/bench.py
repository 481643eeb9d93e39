r"""records/bench.py: peer scripts against our presets, on the same shards, GPU, seed and training wall-clock.

    python records/bench.py --peer ../shared/peers/parameter-golf/baseline_train_gpt.py \
        --ours baseline --ours record --protocol wall --seconds 150 --data-dir D --tokenizer T
    python records/bench.py --eval-only ARTIFACT --data-dir D --tokenizer T
    python records/bench.py --recover records/bench/<date>_<name> ROW.log --peer [LABEL=]SCRIPT[:ENV=V,...]

A row is `--peer [LABEL=]SCRIPT[:ENV=V,...]` (a script in the public challenge's style, configured by
environment variables) or `--ours [LABEL=]PRESET[:key=v,...]` (train_gpt.py with that preset and overrides).
Overrides describe the real 8xH100, 10-minute configuration; the protocol then adapts batch and schedules
exactly as it does for defaults. Rows run one after the other, in command-line order (with `--train-tokens`,
`--concurrent K` runs K of them at once on the same GPUs: what such a row computes does not depend on its speed,
and the compilation and scoring of one overlap the training of another; `--overlap` starts each row once the row
before has trained, so its start-up overlaps that row's scoring while no two training clocks ever overlap;
`--prewarm K` first compiles every distinct row of ours, K at a time, so rows of new shapes compile from the cache).
After every row the table is rewritten (markdown + JSON) with every row's log under records/bench/<date>_<name>/,
so a run cut short keeps what it measured and `--append` can add rows to it later (e.g. one row per 10-minute GPU
call).
The first peer row that finished is the reference for the ratio columns; the first of our rows that finished is
the control that every row's held-out bpb is compared with (an ablation's gains and costs). A row that crashes,
times out or prints no score stays in the table as failed, with its last error line. A row whose bench was cut off
before writing it up (the GPU lease ended) is added to its table from its log with `--recover`, marked as recovered.

Read top to bottom: protocols, row specs, running a row, reading logs, the table, eval-only, main.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from eval_ngram import (ArgumentParser, card_name, find_shards, load_sentencepiece, load_val_tokens, read_shard,  # noqa: E402
                        run_script, unused_path, write_shard)

FLASH_ATTN_FALLBACK = os.path.join(REPO, "records", "flash_attn_fallback")


class UsageError(Exception):
    """Something on the command line cannot work; the message says what to change."""


# ============================================================================ protocols
PROTOCOLS = {
    "wall": "same training wall-clock on this machine, each script at its own batch and settings; peers' "
            "iteration-counted schedules are scaled by seconds x nproc / (8 x their default MAX_WALLCLOCK_SECONDS) "
            "so they cover the same fraction of the run as in a real 8xH100 run (one GPU at full batch steps "
            "about 8x slower: 344 vs 43.5 ms/step for the baseline); our schedules are fractions of the budget",
    "eighth": "each GPU does what one of eight does in a real run: global batch x nproc / 8 and no gradient "
              "accumulation (peers that hard-code it run from a patched temporary copy), so step counts and "
              "schedules match a real run of the same length; peers' iteration-counted schedules are scaled by "
              "seconds / their default MAX_WALLCLOCK_SECONDS (unchanged at 600 s)",
}
# Peer settings counted in optimizer steps that shape the run (warm-up of compiled kernels is not one of them).
# RECUR_START_STEP: the step at which the 1.1063 record (PR #1204) switches its depth recurrence on.
PEER_SCHEDULE_KEYS = ("WARMDOWN_ITERS", "MUON_MOMENTUM_WARMUP_STEPS", "RECUR_START_STEP")
PEER_ACCUM_LINE = re.compile(r"grad_accum_steps\s*=\s*8\s*//\s*world_size")
# Also as a minified script writes it: `...;ema_decay=.997;...` on one long line.
HARD_CODED_EMA = re.compile(r"(?:^|;)\s*ema_decay\s*=\s*([\d.]+)\s*(?:;|$)", re.M)
FLASH_ATTN_IMPORT = re.compile(r"^\s*(from\s+flash_attn_interface\s+import|import\s+flash_attn_interface)", re.M)
# `os.environ.get('NAME', default)` with either quote; a default is a quoted string or a bare literal (1337, 6e2, .5).
ENV_DEFAULT = re.compile(r"""os\.environ\.get\(\s*(["'])(\w+)\1\s*,\s*(?:(["'])([^"'\n]*)\3|([\w.+-]+))\s*\)""")
TOP_LEVEL_IMPORT = re.compile(r"^(?:import\s+(.+)|from\s+(\w+)[\w.]*\s+import\b)", re.M)


def env_defaults(source: str) -> dict[str, str]:
    """The `os.environ.get("NAME", default)` defaults a peer script declares, as text."""
    return {m[2]: m[4] if m[3] else m[5] for m in ENV_DEFAULT.finditer(source)}


def missing_modules(source: str) -> list[str]:
    """Modules a script imports at its top level that this Python cannot find (e.g. brotli for the 1.1063 record).

    flash_attn_interface is not one: a peer row gets the SDPA fallback instead."""
    names = set()
    for m in TOP_LEVEL_IMPORT.finditer(source):
        if m[2]:
            names.add(m[2])
        else:  # `import a.b as c, d` (a minified line may go on after a `;`)
            names.update(part.split()[0].split(".")[0] for part in m[1].split(";")[0].split(",") if part.strip())
    names -= {"__future__", "flash_attn_interface"}
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def as_number(text: str) -> float:
    return float(text.replace("_", ""))


def schedule_scale(protocol: str, seconds: float, nproc: int, reference_seconds: float) -> float:
    """Factor from a step count in a peer's real 8xH100 run to the same point of this run's steps."""
    per_gpu = nproc / 8 if protocol == "wall" else 1.0
    return seconds / reference_seconds * per_gpu


# ============================================================================ row specs
@dataclass
class RowSpec:
    kind: str                      # "peer" or "ours"
    label: str
    target: str                    # peer: absolute script path; ours: preset name
    overrides: dict[str, str] = field(default_factory=dict)


def parse_row_spec(kind: str, text: str) -> RowSpec:
    """`[LABEL=]TARGET[:K=V,K=V]`; a comma inside a value stays in it (`ve_layers=9,10`)."""
    head, _, tail = text.partition(":")
    label = None
    if "=" in head:
        label, head = head.split("=", 1)
    overrides, last_key = {}, None
    for piece in tail.split(",") if tail else []:
        if "=" in piece:
            last_key, value = piece.split("=", 1)
            overrides[last_key] = value
        elif last_key is not None:
            overrides[last_key] += "," + piece
        else:
            raise UsageError(f"--{kind} {text}: '{piece}' is not KEY=VALUE; write --{kind} TARGET:KEY=VALUE,KEY=VALUE")
    if not head:
        raise UsageError(f"--{kind} {text}: name a {'script' if kind == 'peer' else 'preset'} before ':'")
    if kind == "peer":
        target = os.path.abspath(head)
        if not os.path.isfile(target):
            raise UsageError(f"--peer {text}: no script at {target}")
        default_label = os.path.splitext(os.path.basename(head))[0]
    else:
        target = head
        default_label = head + ("+" + ",".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
    return RowSpec(kind, label or default_label, target, overrides)


def unique_labels(specs: list[RowSpec], taken: set[str]) -> None:
    for spec in specs:
        base, n = spec.label, 2
        while spec.label in taken:
            spec.label, n = f"{base}#{n}", n + 1
        taken.add(spec.label)


# ============================================================================ running a row
@dataclass
class Bench:
    protocol: str
    seconds: float
    nproc: int
    seed: int
    data_dir: str
    tokenizer: str
    vocab_size: int | None
    peer_data_dir: str             # our shards under the challenge's file names
    ours_script: str
    row_timeout: float
    work_root: str                 # temporary: peers' checkpoints and our record folders
    out_dir: str
    train_tokens: int = 0          # > 0: each of our rows trains exactly this many tokens (iterations = it / the row's batch)
    concurrent: int = 1            # rows running at once (> 1 only with train_tokens)
    overlap: bool = False          # each row starts once the one before has trained (--overlap)
    keep_records: str = ""         # our rows' record folders go here instead of work_root (--keep-records)


def launcher(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


RUNNING: set[subprocess.Popen] = set()  # the rows' processes now running, for the bench to take down when it stops
STOPPING = threading.Event()  # the bench is being taken down: rows still waiting for their turn never start
# --overlap: the line after which a row's training is over, and a peer's timed steps (`train_time:` since its clock).
TRAINED_LINE = {"ours": re.compile(r"^train_done "), "peer": re.compile(r"^(stopping_early:|peak memory allocated:)")}
PEER_STEP_LINE = re.compile(r"^step:\d+/\d+ .*train_time:([\d.]+)ms")


@dataclass
class Turn:
    """--overlap: what one row tells the next: when it has trained (the next may start) and when it has ended (the
    next may start its clock)."""
    ended_file: str                # created when the row's process has ended: the next row of ours waits for it
    trained: threading.Event = field(default_factory=threading.Event)  # its end-of-training line, or its end
    trained_by_line: bool = False  # set by that line: the next row started while this one was still packing and scoring
    ended: threading.Event = field(default_factory=threading.Event)
    ended_at: float = 0.0          # time.time() at its end


def wait_for_turn(event: threading.Event) -> bool:
    """Wait for event; False if the bench is being taken down meanwhile."""
    while not event.wait(0.2):
        if STOPPING.is_set():
            return False
    return not STOPPING.is_set()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a row's whole process group (torchrun's workers, compile workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished just now
        pass


def run_logged(cmd: list[str], env_updates: dict[str, str], cwd: str, log_path: str, timeout_s: float,
               echo_prefix: str = "", watch=None, until: re.Pattern | None = None) -> tuple[int, list[str], bool, float]:
    """Run cmd, streaming its output to the console (each line after echo_prefix) and to log_path, each line also
    to watch(line) if given; kill its process group after timeout_s, or once a line matches until (all it was run for).

    Returns (exit code, output lines, timed out, seconds).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_updates}
    started, lines, timed_out = time.time(), [], threading.Event()
    # Line-buffered: a row cut off with the machine (a lease ending, a killed bench) leaves what it printed on disk.
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:
        log.write("$ " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env_updates.items()) + " " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        RUNNING.add(proc)

        def kill():
            timed_out.set()
            kill_group(proc)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            for line in proc.stdout:
                sys.stdout.write(echo_prefix + line)
                log.write(line)
                lines.append(line.rstrip("\n"))
                if watch:
                    watch(lines[-1])
                if until and until.match(lines[-1]):
                    kill_group(proc)
                    break
            code = proc.wait()
        finally:
            timer.cancel()
            RUNNING.discard(proc)
            if proc.poll() is None:  # interrupted: take the row's processes down with us
                kill_group(proc)
    return code, lines, timed_out.is_set(), time.time() - started


def plan_peer(spec: RowSpec, bench: Bench, workdir: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Command, environment and protocol notes for a peer row; may write a patched copy into workdir."""
    with open(spec.target, encoding="utf-8") as f:
        source = f.read()
    missing = missing_modules(source)
    if missing:
        raise UsageError(f"{os.path.basename(spec.target)} imports {', '.join(missing)}, not installed here: "
                         f"pip install {' '.join(missing)} (offline: pip install --no-index --find-links DIR "
                         f"{' '.join(missing)} with the wheels carried in DIR)")
    defaults = env_defaults(source)
    script, notes = spec.target, []
    env = {"DATA_PATH": bench.peer_data_dir, "TOKENIZER_PATH": bench.tokenizer, "SEED": str(bench.seed),
           "RUN_ID": re.sub(r"\W", "_", spec.label), "VAL_LOSS_EVERY": "0"}  # mid-run validation only costs time
    if bench.vocab_size:
        env["VOCAB_SIZE"] = str(bench.vocab_size)
    env.update(spec.overrides)
    if env["VAL_LOSS_EVERY"] == "0":
        notes.append("VAL_LOSS_EVERY=0")
    if spec.overrides:
        notes.append("overrides " + ",".join(f"{k}={v}" for k, v in spec.overrides.items()))
    env["MAX_WALLCLOCK_SECONDS"] = f"{bench.seconds:g}"

    scale = schedule_scale(bench.protocol, bench.seconds, bench.nproc, as_number(defaults.get("MAX_WALLCLOCK_SECONDS", "600")))
    for key in PEER_SCHEDULE_KEYS:
        base = spec.overrides.get(key, defaults.get(key))
        if base is not None:
            env[key] = str(max(1, round(as_number(base) * scale)))
            notes.append(f"{key} {as_number(base):g}->{env[key]}")

    if bench.protocol == "eighth":
        if not PEER_ACCUM_LINE.search(source):
            raise UsageError("eighth protocol: no `grad_accum_steps = 8 // world_size` line to patch in this script")
        base = spec.overrides.get("TRAIN_BATCH_TOKENS", defaults.get("TRAIN_BATCH_TOKENS"))
        if base is None:
            raise UsageError("eighth protocol: the script declares no TRAIN_BATCH_TOKENS default to divide")
        env["TRAIN_BATCH_TOKENS"] = str(int(as_number(base)) * bench.nproc // 8)
        script = os.path.join(workdir, os.path.basename(spec.target))
        with open(script, "w", encoding="utf-8") as f:
            f.write(PEER_ACCUM_LINE.sub("grad_accum_steps = 1", source))
        notes.append(f"patched copy: grad_accum_steps=1; TRAIN_BATCH_TOKENS {as_number(base):.0f}->{env['TRAIN_BATCH_TOKENS']}")

    ema = HARD_CODED_EMA.search(source)
    if ema:  # tuned for a real run's step count; an environment variable cannot reach it
        notes.append(f"hard-coded EMA decay {ema[1]} not scaled")
    if FLASH_ATTN_IMPORT.search(source) and importlib.util.find_spec("flash_attn_interface") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [FLASH_ATTN_FALLBACK, os.environ.get("PYTHONPATH")]))
        notes.append("FA3 missing: flash_attn_func -> torch SDPA fallback (slower)")
    return launcher(bench.nproc) + [script], env, notes


def resolved_config(bench: Bench, args: list[str]) -> dict:
    """Our trainer's resolved config for these arguments (`--print-config`)."""
    proc = subprocess.run([sys.executable, bench.ours_script, "--print-config", *args], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError("train_gpt.py --print-config failed: " + last_error_line((proc.stderr + proc.stdout).splitlines()))
    return json.loads(proc.stdout)


def plan_ours(spec: RowSpec, bench: Bench, workdir: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Command and protocol notes for a row of our trainer; its record folder goes to workdir."""
    keys = {"data_dir": bench.data_dir, "tokenizer": bench.tokenizer, "seed": str(bench.seed),
            "run_name": re.sub(r"\W", "_", spec.label), "records_dir": workdir}
    if bench.vocab_size:
        keys["vocab_size"] = str(bench.vocab_size)
    keys.update(spec.overrides)
    notes = [f"preset {spec.target}"] + (["overrides " + ",".join(f"{k}={v}" for k, v in spec.overrides.items())]
                                         if spec.overrides else [])
    keys["max_wallclock_seconds"] = f"{bench.seconds:g}"
    trainer_args = lambda: ["--preset", spec.target, *(f"{k}={v}" for k, v in keys.items())]
    if bench.protocol == "eighth" or bench.train_tokens:  # both need the row's batch: one --print-config
        batch = int(resolved_config(bench, trainer_args())["train_batch_tokens"])
    if bench.protocol == "eighth":
        keys.update(train_batch_tokens=str(batch * bench.nproc // 8), grad_accum_steps="1")
        notes.append(f"train_batch_tokens {batch}->{keys['train_batch_tokens']}, grad_accum_steps=1")
        batch = int(keys["train_batch_tokens"])
    if bench.train_tokens:
        if bench.train_tokens % batch:
            raise UsageError(f"--train-tokens {bench.train_tokens} is not a whole number of this row's {batch}-token steps")
        keys["iterations"] = str(bench.train_tokens // batch)
        notes.append(f"iterations={keys['iterations']} (--train-tokens {bench.train_tokens:,})")
    args = trainer_args()
    return launcher(bench.nproc) + [bench.ours_script, *args], {}, notes


def log_file_name(index: int, label: str) -> str:
    """Letters, digits and . _ - only: names that survive any copy (the GPU lease returns no file with a '+')."""
    return f"{index}_{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.log"


def row_of(spec: RowSpec, index: int, ours_script: str) -> dict:
    """What a table row says of its spec before anything is measured, its log file named."""
    return {"label": spec.label, "kind": spec.kind, "script": os.path.basename(spec.target if spec.kind == "peer" else ours_script),
            "target": spec.target, "overrides": spec.overrides, "log": log_file_name(index, spec.label)}


def run_row(spec: RowSpec, index: int, bench: Bench, turn: Turn | None = None, before: Turn | None = None) -> dict:
    """Run one row and read its log. With --overlap, turn is this row's and before the previous row's: it starts once
    that row has trained; a row of ours waits for that row's end before its clock starts (start_gate), a peer row
    cannot be told to, so one whose clock started before that end fails."""
    try:
        if before and not wait_for_turn(before.trained):
            return {**row_of(spec, index, bench.ours_script), "status": "failed", "error": "not started: the bench stopped", "notes": []}
        return run_started_row(spec, index, bench, turn, before)
    finally:
        if turn:
            turn.ended_at = time.time()
            open(turn.ended_file, "w").close()
            turn.ended.set()
            turn.trained.set()


def run_started_row(spec: RowSpec, index: int, bench: Bench, turn: Turn | None, before: Turn | None) -> dict:
    keep = bench.keep_records and spec.kind == "ours"
    if keep:
        os.makedirs(bench.keep_records, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"row{index}_", dir=bench.keep_records if keep else bench.work_root)
    row = row_of(spec, index, bench.ours_script)
    log_name = row["log"]
    print(f"\n=== row {index}: {spec.label} ({spec.kind}) ===", flush=True)
    try:
        cmd, env, notes = (plan_peer if spec.kind == "peer" else plan_ours)(spec, bench, workdir)
    except UsageError as error:
        with open(os.path.join(bench.out_dir, log_name), "w", encoding="utf-8") as f:
            f.write(f"not started: {error}\n")
        return {**row, "status": "failed", "error": str(error), "notes": []}
    if bench.concurrent > 1 and "OMP_NUM_THREADS" not in os.environ:  # rows sharing the cores: no spinning threads
        env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // bench.concurrent)), **env}
    if before and spec.kind == "ours":
        cmd.append(f"start_gate={before.ended_file}")
    if before:
        notes.append(f"--overlap: started when row {index - 1} had trained (or ended), its clock once that row had ended")
    clock_started = []  # a peer's: the time of its first timed step line, less the train_time it reports

    def watch(line: str) -> None:
        if turn and not turn.trained.is_set() and TRAINED_LINE[spec.kind].match(line):
            turn.trained_by_line = True
            turn.trained.set()
        if before and not clock_started and (m := PEER_STEP_LINE.match(line)):
            clock_started.append(time.time() - float(m[1]) / 1000)
    code, lines, timed_out, wall_s = run_logged(cmd, env, workdir if spec.kind == "peer" else REPO,
                                                os.path.join(bench.out_dir, log_name), bench.row_timeout,
                                                f"[{spec.label}] " if bench.concurrent > 1 or bench.overlap else "", watch)
    metrics = LOG_PARSERS[spec.kind](lines)
    if keep and metrics.get("record_dir"):
        notes.append(f"record folder kept: {metrics['record_dir']}")
    row.update(metrics, notes=notes, command=shlex.join(cmd), env=env, exit_code=code, wall_s=round(wall_s, 1))
    if before and clock_started and before.ended.wait() and clock_started[0] < before.ended_at:
        row.update(status="failed", error=f"--overlap: its clock started {before.ended_at - clock_started[0]:.1f} s before "
                   f"row {index - 1} ended, so its timing is not clean: rerun it without --overlap")
    elif timed_out:
        row.update(status="failed", error=f"timed out after {bench.row_timeout:g} s (--row-timeout)")
    elif code != 0:
        row.update(status="failed", error=f"exit {code}: {last_error_line(lines)}")
    elif metrics.get("val_bpb") is None:
        row.update(status="failed", error="finished without a final score line")
    elif bench.train_tokens and spec.kind == "ours" and metrics.get("steps", 0) < metrics.get("iterations", 0):
        row.update(status="failed", error=f"the {bench.seconds:g} s budget ended it at step {metrics['steps']} before its "
                   f"{metrics['iterations']} steps of --train-tokens: it trained fewer tokens; raise --seconds")
    else:
        row["status"] = "ok"
    return row


def stop_everything(pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Interrupted: no process outlives the bench, and none not yet begun starts."""
    STOPPING.set()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list(RUNNING):
        kill_group(proc)


# --prewarm: our trainer announces its start gate once every graph it will train with is compiled (train_gpt.py)
GATE_REACHED_LINE = re.compile(r"^start_gate waiting ")
WARMUP_LINE = re.compile(r"^warmup compile_steps=\d+ seconds=([\d.]+)")


def prewarm(specs: list[RowSpec], bench: Bench, at_once: int) -> dict:
    """--prewarm K: before any row starts, run each distinct row of ours up to its start gate, K at a time on the same
    GPUs, and stop it there (the gate never opens): its compile warm-up has filled the on-disk compile cache, so the
    row itself compiles in seconds instead of ~100 s on an H200, and rows of new shapes no longer compile one after
    the other. Nothing is timed while they compile. Returns what the table says of it."""
    runs = {}  # rows that differ only in record folder (and label) run the same command: compiled once
    for spec in specs:
        if spec.kind == "ours":
            same = {k: v for k, v in spec.overrides.items() if k != "records_dir"}
            runs.setdefault((spec.target, tuple(sorted(same.items()))), spec)
    never = os.path.join(bench.work_root, "prewarm_gate_never_opens")
    print(f"\n=== prewarm: {len(runs)} configuration(s) of ours, {at_once} at a time ===", flush=True)

    def warm(numbered: tuple[int, RowSpec]) -> tuple[str, float | None]:
        number, spec = numbered
        try:
            cmd, _, _ = plan_ours(spec, bench, bench.work_root)
        except UsageError:
            return spec.label, None  # its row fails with this error in its turn
        _, lines, _, _ = run_logged(cmd + [f"start_gate={never}"], {}, REPO, os.path.join(bench.out_dir, f"prewarm_{log_file_name(number, spec.label)}"),
                                    bench.row_timeout, f"[prewarm {spec.label}] ", until=GATE_REACHED_LINE)
        if not lines or not GATE_REACHED_LINE.match(lines[-1]):
            return spec.label, None
        return spec.label, next((float(m[1]) for line in lines if (m := WARMUP_LINE.match(line))), 0.0)

    started = time.time()
    earlier = sum(name.startswith("prewarm_") for name in os.listdir(bench.out_dir))  # --append: logs numbered on
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        try:
            warmed = list(pool.map(warm, enumerate(runs.values(), earlier + 1)))
        except BaseException:
            stop_everything(pool)
            raise
    failed = [label for label, seconds in warmed if seconds is None]
    summary = {"at_once": at_once, "configurations": len(warmed), "seconds": round(time.time() - started, 1),
               "warmup_s": {label: seconds for label, seconds in warmed if seconds is not None}, "failed": failed}
    print(f"prewarm: {len(warmed)} configuration(s) compiled in {summary['seconds']:g} s"
          + (f"; never reached its gate (its row will show why): {', '.join(failed)}" if failed else ""), flush=True)
    return summary


# ============================================================================ reading logs
# A peer's best-documented score after packing, most specific first; the row names the line it used.
PEER_SCORE_LINES = ("legal_ttt_exact", "final_int6_sliding_window_exact", "final_int8_zlib_roundtrip_exact sliding",
                    "final_int8_zlib_roundtrip_exact", "final_int6_roundtrip_exact")
ANY_EXACT_SCORE = re.compile(r"^(final_\w+_exact) val_loss:(\S+) val_bpb:(\S+)")


def last_error_line(lines: list[str]) -> str:
    """The exception or `error:` line nearest the end, else the last output line.

    torchrun prefixes workers' lines with [rankN]: and ends with its own ChildFailedError, which says nothing.
    """
    for line in reversed(lines):
        if "ChildFailedError" in line:
            continue
        if re.match(r"^(\[rank\d+\]:\s*)?([\w.]*(Error|Exception|Interrupt)\b|error\b)", line.strip(), re.I):
            return line.strip()
    text = [line.strip() for line in lines if line.strip()]
    return text[-1] if text else "(no output)"


def peer_score(lines: list[str]) -> tuple[str, float, float] | None:
    for name in PEER_SCORE_LINES:
        pattern = re.compile("^" + re.escape(name) + r" (?:sliding )?val_loss:(\S+) (?:sliding )?val_bpb:(\S+)")
        for line in lines:
            m = pattern.match(line)
            if m:
                return name, float(m[1]), float(m[2])
    for line in lines:
        m = ANY_EXACT_SCORE.match(line)
        if m:
            return m[1], float(m[2]), float(m[3])
    return None


def parse_peer_log(lines: list[str]) -> dict:
    """Challenge-style log: `step:N/M ... train_time:Tms step_avg:Ams`, peak memory, packed size, final score."""
    out: dict = {}
    batch = next((int(m[1]) for line in lines if (m := re.search(r"\btrain_batch_tokens:(\d+)", line))), None)
    steps = [(int(m[1]), float(m[2]), float(m[3])) for line in lines
             if (m := re.match(r"^step:(\d+)/\d+ .*train_time:([\d.]+)ms step_avg:([\d.]+)ms", line))]
    if steps:
        step, train_ms, step_avg = max(steps)
        out.update(steps=step, ms_step=step_avg, train_time_s=train_ms / 1000)
        if batch and train_ms > 0:
            out["tok_s"] = batch * step / (train_ms / 1000)
    for line in lines:
        if m := re.match(r"^peak memory allocated: (\d+) MiB", line):
            out["peak_mem_mib"] = float(m[1])
        if m := re.match(r"^Total submission size (\S+): (\d+) bytes", line):
            out.update(artifact_bytes=int(m[2]), artifact_format=m[1])
    score = peer_score(lines)
    if score:
        name, out["val_loss"], out["val_bpb"] = score
        out["score_line"] = name
        partner = re.compile("^" + re.escape(name.replace("_exact", "")) + r" val_loss:.*eval_time:([\d.]+)ms")
        out["eval_time_s"] = next((float(m[1]) / 1000 for line in lines if (m := partner.match(line))), None)
    return out


def key_values(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def parse_ours_log(lines: list[str]) -> dict:
    """Our trainer's `step=...` progress, `train_done ...`, `packing_loss ...`, `eval budget: ...` and `final ...`
    lines (SPEC.md); a line cut short (a log tail given to --recover) is skipped."""
    out: dict = {"eval_budget_steps": []}
    for line in lines:
        try:
            if line.startswith("config {"):  # the resolved config: the step cap, checked against the steps run
                out["iterations"] = int(json.loads(line.removeprefix("config "))["iterations"])
            elif line.startswith("step="):
                kv = key_values(line)
                out.update(steps=int(kv["step"]), tok_s=float(kv["tok_s"]), ms_step=float(kv["ms_step"]))
            elif line.startswith("train_done "):
                kv = key_values(line)
                out.update(steps=int(kv["steps"]), tok_s=float(kv["tok_s"]), ms_step=float(kv["ms_step"]),
                           peak_mem_mib=float(kv["peak_mem_mib"]) or None)  # 0 on CPU: nothing measured
            elif line.startswith("packing_loss "):  # the packed model on the training tokens the run held out
                kv = key_values(line)
                out.update(heldout_bpb=float(kv["bpb_packed"]), heldout_bpb_trained=float(kv["bpb_trained"]))
            elif line.startswith("eval budget: "):  # the evaluation was made cheaper to end in time: say so in the row
                out["eval_budget_steps"].append(line.removeprefix("eval budget: "))
            elif line.startswith("record: "):  # the run's record folder (artifact, config, log)
                out["record_dir"] = line.removeprefix("record: ").strip()
            elif line.startswith("final "):
                kv = key_values(line)
                out.update(val_bpb=float(kv["val_bpb"]), val_loss=float(kv["val_loss"]), artifact_bytes=int(kv["bytes_total"]),
                           train_time_s=float(kv["train_time_s"]), eval_time_s=float(kv["eval_time_s"]))
        except (KeyError, ValueError, TypeError):
            continue
    return out


LOG_PARSERS = {"peer": parse_peer_log, "ours": parse_ours_log}  # row kind -> what reads its log


# ============================================================================ the table
def add_ratios(rows: list[dict], reference_kind: str) -> str | None:
    """tokens/s and val_bpb of every row divided by the first row of reference_kind that finished; returns its label."""
    reference = next((r for r in rows if r["kind"] == reference_kind and r["status"] == "ok"), None)
    for row in rows:
        ok = reference is not None and row["status"] == "ok"
        row["ratio_tok_s"] = row["tok_s"] / reference["tok_s"] if ok and row.get("tok_s") and reference.get("tok_s") else None
        row["ratio_bpb"] = row["val_bpb"] / reference["val_bpb"] if ok else None
    return reference["label"] if reference else None


def add_heldout_deltas(rows: list[dict]) -> str | None:
    """Each row's held-out bpb minus the first finished row's that has one (an ablation's control: peers report none);
    returns that row's label."""
    control = next((r for r in rows if r["status"] == "ok" and r.get("heldout_bpb") is not None), None)
    for row in rows:
        ok = control is not None and row["status"] == "ok" and row.get("heldout_bpb") is not None
        row["heldout_delta"] = row["heldout_bpb"] - control["heldout_bpb"] if ok else None
    return control["label"] if control else None


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fmt_ratio(value) -> str:
    return fmt(value, ".4f" if value is None or value >= 0.01 else ".1e")


def row_notes(row: dict) -> str:
    notes = list(row.get("notes", [])) + [f"eval budget: {step}" for step in row.get("eval_budget_steps", [])]
    if row.get("score_line"):
        notes.append(f"score: {row['score_line']}")
    if row["status"] != "ok":
        notes.insert(0, f"**FAILED**: {row['error']}")
    return "; ".join(notes).replace("|", "\\|")


TRAIN_COLUMNS = [("row", lambda r: r["label"]), ("script", lambda r: r["script"]), ("protocol notes", row_notes),
                 ("tokens/s", lambda r: fmt(r.get("tok_s"), ",.0f")), ("ms/step", lambda r: fmt(r.get("ms_step"), ".1f")),
                 ("steps", lambda r: fmt(r.get("steps"), "d")), ("peak MiB", lambda r: fmt(r.get("peak_mem_mib"), ",.0f")),
                 ("held-out bpb", lambda r: fmt(r.get("heldout_bpb"), ".4f")),
                 ("held-out vs control", lambda r: fmt(r.get("heldout_delta"), "+.4f")), ("val_bpb", lambda r: fmt(r.get("val_bpb"), ".4f")),
                 ("artifact bytes", lambda r: fmt(r.get("artifact_bytes"), ",d")),
                 ("eval s", lambda r: fmt(r.get("eval_time_s"), ".1f")),
                 ("tok/s ratio", lambda r: fmt_ratio(r.get("ratio_tok_s"))), ("bpb ratio", lambda r: fmt_ratio(r.get("ratio_bpb")))]
EVAL_COLUMNS = [("row", lambda r: r["label"]), ("protocol notes", row_notes), ("tokens", lambda r: fmt(r.get("tokens"), ",d")),
                ("eval s", lambda r: fmt(r.get("eval_time_s"), ".1f")), ("tokens/s", lambda r: fmt(r.get("tok_s"), ",.0f")),
                ("val_bpb", lambda r: fmt(r.get("val_bpb"), ".4f")),
                ("tok/s ratio", lambda r: fmt_ratio(r.get("ratio_tok_s"))), ("bpb ratio", lambda r: fmt_ratio(r.get("ratio_bpb")))]


def markdown(table: dict) -> str:
    eval_only = table["protocol"] == "eval-only"
    lines = [f"# bench {table['name']} ({table['date']})", ""]
    if eval_only:
        lines.append(f"- eval-only: `eval_ngram.py` on {table['artifact']}, with and without the n-gram mixture; "
                     "tokens/s = validation tokens scored / eval time")
    else:
        lines += [f"- protocol `{table['protocol']}`: {PROTOCOLS[table['protocol']]}",
                  f"- training wall-clock {table['seconds']:g} s per row, {table['nproc']} process(es), seed {table['seed']}"]
        if table.get("train_tokens"):
            lines.append(f"- each of our rows trains exactly {table['train_tokens']:,} tokens (`iterations` = tokens / its "
                         "batch; the wall-clock only bounds it): rows of other tables with the same tokens compare too, "
                         "whatever card ran them")
        for warmed in table.get("prewarm", []):
            lines.append(f"- `--prewarm {warmed['at_once']}`: {warmed['configurations']} configuration(s) of ours compiled "
                         f"beforehand in {warmed['seconds']:g} s, {warmed['at_once']} at a time; their rows compiled from that cache"
                         + (f" (never reached its gate: {', '.join(warmed['failed'])})" if warmed["failed"] else ""))
        if table.get("concurrent", 1) > 1:
            lines.append(f"- rows ran {table['concurrent']} at a time on the same GPU(s): their tokens/s, ms/step and eval s "
                         "are shared-GPU figures, not speeds; the scores are what they would be alone, unless a row's notes name an "
                         "eval budget step")
    val = (f"the first {table['val_tokens']:,} val tokens" if table.get("val_tokens") else
           f"the first {table['val_docs']:,} val documents" if table.get("val_docs") else "all val tokens")
    lines += [f"- data {table['data_dir']} ({val}); tokenizer {table['tokenizer']} (vocab {table['vocab_size']})",
              f"- GPU {table['gpu']}; torch {table['torch']}",
              f"- ratios: each row / {table['reference'] or '(no reference row finished)'}"]
    if not eval_only:
        lines.append("- held-out bpb: our rows' packed model on the last training tokens, which the run never trained on "
                     "(`train_holdout_tokens`): choose settings on it, never on val_bpb; held-out vs control: each row's minus "
                     f"{table.get('control') or '(no row of ours finished)'}'s, the first of our rows that finished")
    lines.append("")
    columns = EVAL_COLUMNS if eval_only else TRAIN_COLUMNS
    lines.append("| " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in table["rows"]:
        lines.append("| " + " | ".join(cell(row) for _, cell in columns) + " |")
    return "\n".join(lines) + "\n"


def save_table(table: dict, out_dir: str) -> str:
    table["reference"] = add_ratios(table["rows"], "eval" if table["protocol"] == "eval-only" else "peer")
    table["control"] = add_heldout_deltas(table["rows"])
    text = markdown(table)
    with open(os.path.join(out_dir, "table.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


RECOVERED = "recovered from its log by --recover: the bench was cut off before writing the row (no wall time, command or protocol notes)"


def recover_row(table_dir: str, log_path: str, spec: RowSpec, ours_script: str) -> dict:
    """Append the row a cut-off bench never wrote to the table in table_dir, from what its log holds."""
    path = os.path.join(table_dir, "table.json")
    if not os.path.isfile(path):
        raise UsageError(f"--recover: no table at {path}")
    if not os.path.isfile(log_path):
        raise UsageError(f"--recover: no log at {log_path}")
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    unique_labels([spec], {row["label"] for row in table["rows"]})
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip("\n") for line in f]
    row = {**row_of(spec, len(table["rows"]) + 1, ours_script), "notes": [RECOVERED], **LOG_PARSERS[spec.kind](lines)}
    if os.path.abspath(log_path) != os.path.abspath(os.path.join(table_dir, row["log"])):
        shutil.copyfile(log_path, os.path.join(table_dir, row["log"]))
    if row.get("val_bpb") is None:
        row.update(status="failed", error="its log holds no final score line")
    else:
        row["status"] = "ok"
    table["rows"].append(row)
    print(save_table(table, table_dir), end="")
    return table


# ============================================================================ eval-only
def count_val_tokens(data_dir: str) -> int:
    return sum(len(read_shard(path)) for path in find_shards(data_dir, "val"))


def run_eval_rows(args, bench: Bench) -> list[dict]:
    """eval_ngram.py on one artifact, without the n-gram mixture (the ratios' reference) and with it."""
    # --budget 0: the whole evaluation is timed, never a cheaper rest
    base = [sys.executable, args.eval_script, os.path.abspath(args.eval_only), "--data-dir", bench.data_dir,
            "--tokenizer", bench.tokenizer, "--budget", "0"] + (["--stride", str(args.stride)] if args.stride else [])
    base += ["--max-tokens", str(args.max_tokens)] if args.max_tokens else []
    with_ngram = ["--ngram-order", str(args.ngram_order)] if args.ngram_order else []
    order = str(args.ngram_order) if args.ngram_order else "from the artifact"
    variants = [("no n-gram", ["--no-ngram"]), (f"n-gram order {order}", with_ngram)]
    rows, val_tokens = [], None
    for index, (label, extra) in enumerate(variants, 1):
        log_name = log_file_name(index, label)
        print(f"\n=== row {index}: {label} ===", flush=True)
        code, lines, timed_out, wall_s = run_logged(base + extra, {}, REPO, os.path.join(bench.out_dir, log_name), bench.row_timeout)
        final = next((key_values(line) for line in reversed(lines) if line.startswith("final ")), None)
        row = {"label": label, "kind": "eval", "script": os.path.basename(args.eval_script), "log": log_name,
               "command": shlex.join(base + extra), "exit_code": code, "wall_s": round(wall_s, 1), "notes": []}
        if timed_out or code != 0 or final is None:
            error = (f"timed out after {bench.row_timeout:g} s" if timed_out else
                     f"exit {code}: {last_error_line(lines)}" if code else "finished without a final line")
            rows.append({**row, "status": "failed", "error": error})
            continue
        if "tokens" in final:
            tokens = int(final["tokens"])
        else:
            val_tokens = val_tokens if val_tokens is not None else count_val_tokens(bench.data_dir)
            tokens = min(val_tokens, args.max_tokens) if args.max_tokens else val_tokens
            row["notes"].append("tokens counted from the val shards")
        eval_s = float(final["eval_time_s"])
        rows.append({**row, "status": "ok", "tokens": tokens, "eval_time_s": eval_s, "val_bpb": float(final["val_bpb"]),
                     "tok_s": tokens / eval_s if eval_s > 0 else None})
    return rows


# ============================================================================ main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser(prog="records/bench.py", description=__doc__.rsplit("\n\n", 1)[0],
                       epilog="protocols:\n" + "\n".join(f"  {k}: {v}" for k, v in PROTOCOLS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", dest="rows", action="append", type=lambda s: ("peer", s), default=[],
                   metavar="[LABEL=]SCRIPT[:ENV=V,...]", help="a challenge-style script configured by environment variables")
    p.add_argument("--ours", dest="rows", action="append", type=lambda s: ("ours", s),
                   metavar="[LABEL=]PRESET[:key=v,...]", help="our trainer with a preset and overrides")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="wall", help="how rows are made comparable")
    p.add_argument("--seconds", type=float, default=150.0, help="training wall-clock per row")
    p.add_argument("--data-dir", help="folder of *_train_*.bin / *_val_*.bin shards (required but with --recover)")
    p.add_argument("--tokenizer", help="sentencepiece .model the shards were made with, or bytes (as --data-dir)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--val-tokens", type=int, default=0, metavar="N", help="every row scores only the first N "
                   "validation tokens (0 = all): a shorter evaluation, the same for every row")
    p.add_argument("--val-docs", type=int, default=0, metavar="N", help="every row scores only the first N whole "
                   "validation documents: the same text under any tokenizer (sp1024 vs sp8192 rows compare)")
    p.add_argument("--nproc", type=int, default=1, help="GPUs per row (torchrun when > 1)")
    p.add_argument("--train-tokens", type=int, default=0, metavar="N", help="each of our rows trains exactly N tokens "
                   "(iterations = N / its batch; a row that --seconds stops first fails): rows of different machines "
                   "then compare at equal tokens")
    p.add_argument("--concurrent", type=int, default=1, metavar="K", help="with --train-tokens: run K rows at once on "
                   "the same GPUs, each with cores / K CPU threads (give --seconds room for the sharing; a row the budget "
                   "stops first still fails)")
    p.add_argument("--overlap", action="store_true", help="start each row once the row before has trained, so its "
                   "start-up and compilation run while that row packs and scores (a lease holds more rows); a row of ours "
                   "starts its clock only once that row has ended; a peer row whose clock started earlier fails")
    p.add_argument("--prewarm", type=int, default=0, metavar="K", help="first compile every distinct row of ours, K at a "
                   "time on the same GPUs (each run stopped at its start gate), so that each row then compiles from the "
                   "cache in seconds (each needs its training memory while it compiles: mind K)")
    p.add_argument("--keep-records", default="", metavar="DIR", help="keep our rows' record folders (artifact, config, "
                   "log) under DIR; by default they are temporary and deleted with the bench's other scratch files")
    p.add_argument("--name", default=None, help="table name (default: <protocol><seconds>s or eval)")
    p.add_argument("--out", default=os.path.join(REPO, "records", "bench"), help="parent folder of <date>_<name>/")
    p.add_argument("--append", action="store_true", help="add rows to today's table of this --name")
    p.add_argument("--row-timeout", type=float, default=None, help="seconds before a row is killed (default seconds + 1200)")
    p.add_argument("--ours-script", default=os.path.join(REPO, "train_gpt.py"), help="our trainer (a stand-in for tests)")
    p.add_argument("--eval-only", metavar="ARTIFACT", help="benchmark eval_ngram.py throughput on this artifact instead")
    p.add_argument("--eval-script", default=os.path.join(REPO, "eval_ngram.py"), help="evaluator for --eval-only")
    p.add_argument("--ngram-order", type=int, default=0, help="--eval-only: n-gram order (0 = the artifact's config)")
    p.add_argument("--stride", type=int, default=0, help="--eval-only: sliding-window stride (0 = the artifact's)")
    p.add_argument("--max-tokens", type=int, default=0, help="--eval-only: score only the first N val tokens (0 = all)")
    p.add_argument("--recover", nargs=2, metavar=("TABLE_DIR", "LOG"), help="add the one --peer/--ours row a cut-off "
                   "bench did not write to the table in TABLE_DIR, from its LOG (nothing runs)")
    args = p.parse_args(argv)
    if args.recover:
        if len(args.rows) != 1 or args.eval_only:
            raise UsageError("--recover adds one row: give exactly one --peer or --ours, the row the log belongs to")
        return args
    if not args.data_dir or not args.tokenizer:
        raise UsageError("--data-dir and --tokenizer are required (but with --recover)")
    if args.eval_only and args.rows:
        raise UsageError("--eval-only benchmarks evaluation alone; drop --peer/--ours or run them in another call")
    if not args.eval_only and not args.rows:
        raise UsageError("nothing to run: give at least one --peer SCRIPT or --ours PRESET (or --eval-only ARTIFACT)")
    if args.eval_only and args.append:
        raise UsageError("--append adds training rows; an --eval-only table is made in one call")
    if args.eval_only and not os.path.isfile(args.eval_only):
        raise UsageError(f"--eval-only {args.eval_only}: no such artifact file")
    if args.val_tokens and args.val_docs:
        raise UsageError("--val-tokens and --val-docs both cut the validation set; give one")
    if args.seconds <= 0 or args.nproc < 1 or args.concurrent < 1:
        raise UsageError("--seconds must be > 0, --nproc >= 1 and --concurrent >= 1")
    if args.train_tokens < 0:
        raise UsageError(f"--train-tokens {args.train_tokens}: a number of tokens is at least 1 (0 = no cap)")
    if args.train_tokens and any(kind == "peer" for kind, _ in args.rows):
        raise UsageError("--train-tokens caps our rows only (a peer's schedule is its own): bench peers in a table without it")
    if args.prewarm < 0 or (args.prewarm and not any(kind == "ours" for kind, _ in args.rows)):
        raise UsageError(f"--prewarm {args.prewarm}: compiles rows of ours beforehand, K >= 1 at a time: give K >= 1 and an --ours row")
    if args.overlap and (args.concurrent > 1 or args.eval_only):
        raise UsageError("--overlap starts rows one after another: not with --concurrent or --eval-only")
    if args.concurrent > 1 and not args.train_tokens:
        raise UsageError("--concurrent runs rows side by side, which slows each: only with --train-tokens, whose rows "
                         "compute the same whatever their speed (a wall-clock row would train less)")
    return args


def vocab_of(tokenizer: str) -> int | None:
    """The vocabulary both kinds of row are told to use; None leaves it to each script."""
    if tokenizer == "bytes":  # our trainer's byte-level tokens; challenge scripts cannot use them
        return 256
    if not tokenizer.endswith(".model"):
        return None
    return int(load_sentencepiece(tokenizer).vocab_size())


def first_documents(data_dir: str, docs: int):
    """Validation tokens of the first `docs` whole documents (each starts with the BOS id export.json names)."""
    export = os.path.join(data_dir, "export.json")
    bos = json.load(open(export, encoding="utf-8")).get("bos_id", 1) if os.path.isfile(export) else 1
    tokens = load_val_tokens(data_dir).numpy()
    starts = (tokens == bos).nonzero()[0]
    if len(starts) <= docs:
        raise UsageError(f"--val-docs {docs}: {data_dir} holds {len(starts)} validation documents; ask for fewer")
    return tokens[:starts[docs]]


def present_as_challenge_shards(data_dir: str, into: str, val_tokens: int = 0, val_docs: int = 0) -> tuple[int, int]:
    """Symlink our shards as fineweb_{train,val}_NNNNNN.bin, the names challenge scripts glob for; with val_tokens
    (val_docs), the validation split is instead one shard of its first val_tokens tokens (val_docs documents)."""
    counts = []
    for split in ("train", "val"):
        paths = find_shards(data_dir, split)
        if split == "val" and (val_tokens or val_docs):
            subset = first_documents(data_dir, val_docs) if val_docs else load_val_tokens(data_dir, val_tokens).numpy()
            write_shard(os.path.join(into, "fineweb_val_000000.bin"), subset)
            counts.append(1)
            continue
        for i, path in enumerate(paths):
            os.symlink(os.path.abspath(path), os.path.join(into, f"fineweb_{split}_{i:06d}.bin"))
        counts.append(len(paths))
    return counts[0], counts[1]


def open_table(args, settings: dict) -> tuple[dict, str]:
    """A new <date>_<name>/ folder, or with --append today's existing one measured under the same settings."""
    name = args.name or ("eval" if args.eval_only else f"{args.protocol}{args.seconds:g}s")
    base = os.path.join(args.out, f"{settings['date']}_{name}")
    if args.append:
        path = os.path.join(base, "table.json")
        if not os.path.isfile(path):
            raise UsageError(f"--append: no table at {path}; run once without --append to start it")
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        for key in ("protocol", "seconds", "nproc", "seed", "data_dir", "val_tokens", "val_docs", "tokenizer", "gpu", "train_tokens",
                    "concurrent"):
            if table.get(key, 1 if key == "concurrent" else None) != settings[key]:
                raise UsageError(f"--append: {path} has {key}={table.get(key)!r} but this run has {settings[key]!r}; "
                                 "rows are only comparable under one setting, so start a new --name")
        return table, base
    folder = unused_path(base)
    os.makedirs(folder)
    return {"name": os.path.basename(folder).split("_", 1)[1], **settings, "rows": []}, folder


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    if args.recover:
        return recover_row(*args.recover, parse_row_spec(*args.rows[0]), args.ours_script)
    if not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir} is not a folder; make shards with data/export.py or data/fineweb.py")
    if args.tokenizer != "bytes" and not os.path.isfile(args.tokenizer):
        raise UsageError(f"--tokenizer {args.tokenizer} does not exist; pass the .model the shards were made with (or bytes)")
    specs = [parse_row_spec(kind, text) for kind, text in args.rows]
    if any(s.kind == "ours" for s in specs) and not os.path.isfile(args.ours_script):
        raise UsageError(f"our trainer {args.ours_script} is missing; pass --ours-script PATH")
    tokenizer = args.tokenizer if args.tokenizer == "bytes" else os.path.abspath(args.tokenizer)
    settings = {"date": datetime.date.today().isoformat(), "protocol": "eval-only" if args.eval_only else args.protocol,
                "seconds": args.seconds, "nproc": args.nproc, "seed": args.seed, "data_dir": os.path.abspath(args.data_dir),
                "val_tokens": args.val_tokens, "val_docs": args.val_docs, "train_tokens": args.train_tokens,
                "concurrent": args.concurrent, "tokenizer": tokenizer, "vocab_size": vocab_of(args.tokenizer), "gpu": card_name(), "torch": torch.__version__}
    if args.eval_only:
        settings["artifact"] = os.path.abspath(args.eval_only)
    work_root = tempfile.mkdtemp(prefix="bench_")
    try:
        peer_data = os.path.join(work_root, "data")
        os.makedirs(peer_data)
        n_train, n_val = present_as_challenge_shards(args.data_dir, peer_data, args.val_tokens, args.val_docs)
        table, out_dir = open_table(args, settings)
        unique_labels(specs, {row["label"] for row in table["rows"]})
        bench = Bench(args.protocol, args.seconds, args.nproc, args.seed,  # with --val-tokens, ours reads the subset too
                      peer_data if args.val_tokens or args.val_docs else settings["data_dir"], settings["tokenizer"],
                      settings["vocab_size"], peer_data, os.path.abspath(args.ours_script),
                      args.row_timeout or args.seconds + 1200, work_root, out_dir, args.train_tokens, args.concurrent,
                      args.overlap, os.path.abspath(args.keep_records) if args.keep_records else "")
        print(f"bench {table['name']}: {settings['protocol']}, {args.seconds:g} s per row, seed {args.seed}, "
              f"GPU {settings['gpu']}, data {settings['data_dir']} ({n_train} train / {n_val} val shards) -> {out_dir}",
              flush=True)
        if args.eval_only:
            table["rows"] = run_eval_rows(args, bench)
            save_table(table, out_dir)
        STOPPING.clear()
        if args.prewarm:
            table.setdefault("prewarm", []).append(prewarm(specs, bench, args.prewarm))
        first = len(table["rows"]) + 1
        turns = [Turn(os.path.join(work_root, f"ended_{index}")) if args.overlap else None
                 for index in range(first, first + len(specs))]
        with concurrent.futures.ThreadPoolExecutor(2 if args.overlap else args.concurrent) as pool:
            futures = [pool.submit(run_row, spec, first + i, bench, turns[i], turns[i - 1] if i else None)
                       for i, spec in enumerate(specs)]
            try:
                for i, future in enumerate(futures):  # in command-line order, whichever finishes first
                    table["rows"].append(future.result())
                    if i + 1 < len(specs) and turns[i] and turns[i].trained_by_line:
                        table["rows"][-1]["notes"].append("--overlap: the next row started while this one packed and "
                                                          "scored (its eval s is a shared-GPU figure)")
                    save_table(table, out_dir)  # after every row: a run cut short keeps what it measured
            except BaseException:
                stop_everything(pool)
                raise
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    text = save_table(table, out_dir)
    failed = [row["label"] for row in table["rows"] if row["status"] != "ok"]
    print(f"\nsaved {out_dir}/table.md, table.json and the logs" + (f"; failed: {', '.join(failed)}" if failed else ""))
    print("\n" + text, end="")
    return table


if __name__ == "__main__":
    run_script(main, UsageError)
