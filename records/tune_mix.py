r"""records/tune_mix.py: choose the n-gram mixer's settings on held-out TRAINING text, never on validation tokens.

    python records/tune_mix.py ARTIFACT --data-dir D [--holdout-tokens N] [--grid KEY=V1,V2,...]... [--ttt-steps K]
        [--ttt-weights lora|all] [--out FOLDER]

Scores the artifact's model, mixed with the score-first n-gram cache exactly as eval_ngram.py scores it, on the last
N tokens of the training split (eval_ngram.holdout_tokens: what a run with train_holdout_tokens=N never trained on),
once for every combination of the grid and once with the defaults (eval_ngram.MIX_DEFAULTS and the artifact's
ngram_order, ttt_lr, ttt_rank, eval_chunk_tokens, ttt_doc_chunk and eval_seq_len, and --ttt-steps, 0 unless given,
which the grid may vary too: more TTT steps per chunk cost evaluation time, so weigh a gain against it; ttt_doc_chunk 0
scores with sliding windows over the stream, N > 0 document by document with TTT after every N tokens of each;
eval_seq_len is the window, the training length by default: longer reads more context than training had). Prints
the rows sorted by bpb, the defaults' row marked, and the best setting as eval_ngram.py arguments, as a MIX_DEFAULTS
dict and as config keys; --out writes the table as tune_mix.md and tune_mix.json. Validation shards are never opened:
a setting chosen by trying it on the validation tokens is fitted to them, and its score no longer measures anything.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import eval_ngram  # noqa: E402
from eval_ngram import MIX_DEFAULTS, UsageError  # noqa: E402

# Around the defaults, the three gate weights that move the mixture most: 3 x 2 x 2 = 12 scorings.
DEFAULT_GRID = {"gate_bias": [-8.0, -7.0, -6.0], "gate_order": [0.75, 1.0], "gate_entropy": [0.5, 1.0]}
# Evaluation config keys the grid may vary beside the mixer weights: (type, smallest value, eval_ngram.py option).
SETTINGS = {"ngram_order": (int, 2, "--ngram-order"), "ttt_lr": (float, 0.0, "--ttt-lr"), "ttt_steps": (int, 0, "--ttt-steps"),
            "ttt_rank": (int, 1, "--ttt-rank"), "ttt_doc_chunk": (int, 0, "--ttt-doc-chunk"),
            "eval_chunk_tokens": (int, 1, "--chunk-tokens"), "eval_seq_len": (int, 1, "--seq-len")}
TTT_ONLY = ("ttt_lr", "ttt_rank")  # the SETTINGS that change nothing without test-time training
MODEL_SIDE = tuple(key for key in SETTINGS if key != "ngram_order")  # what the model's pass depends on


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """{key: values} from KEY=V1,V2,... arguments (DEFAULT_GRID when there are none)."""
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        kind, low, _ = SETTINGS.get(key, (float, -float("inf"), None))
        try:
            if key not in {**MIX_DEFAULTS, **SETTINGS} or key in grid:
                raise ValueError
            grid[key] = sorted({kind(v) for v in values.split(",")})
            if grid[key][0] < low:
                raise ValueError
        except ValueError:
            bounds = ", ".join(f"{k}: {'integers ' if kind is int else ''}>= {low:g}" for k, (kind, low, _) in SETTINGS.items())
            raise UsageError(f"--grid {item!r}: expected KEY=NUMBER,NUMBER,... with KEY one of "
                             f"{', '.join([*MIX_DEFAULTS, *SETTINGS])}, each key once ({bounds})") from None
        for value in grid[key] if key in MIX_DEFAULTS else ():
            eval_ngram.check_mix({key: value})  # before any scoring: a mixer it refuses would end the run late
    return grid or DEFAULT_GRID


def defaults(cfg) -> dict[str, float]:
    """MIX_DEFAULTS with the SETTINGS as a config has them (the window in tokens, also where eval_seq_len is 0 for the
    training length): the row every grid is compared with."""
    return {**MIX_DEFAULTS, **{key: getattr(cfg, key) for key in SETTINGS}, "eval_seq_len": eval_ngram.eval_window(cfg)}


def combinations(grid: dict[str, list[float]], base: dict[str, float]) -> list[dict[str, float]]:
    """Every full setting of the grid (keys it leaves out as in `base`, the defaults), the defaults first, each once.
    Where a setting has no test-time training (ttt_steps 0), TTT's own keys take the defaults' values: any other value
    would score the same, so the grid ttt_steps=0,2 x ttt_lr=a,b is three scorings, not four."""
    rows = [dict(base)]
    for values in itertools.product(*grid.values()):
        row = {**base, **dict(zip(grid, values))}
        if row["ttt_steps"] == 0:
            row.update({key: base[key] for key in TTT_ONLY})
        if row not in rows:
            rows.append(row)
    return rows


def tune(model, tokens, tables, artifact_tables: dict, grid: dict[str, list[float]], base: dict[str, float], *,
         device="cpu", log=print, **settings) -> list[dict]:
    """One row per combination ({"mix", "settings", "val_bpb", "val_loss", "model_alone_bpb": the same pass without
    the cache, "defaults"}), sorted by val_bpb; base holds MIX_DEFAULTS and the SETTINGS as the artifact has them;
    settings are eval_ngram.score's config keywords. The model scores once per setting of the keys other than the
    mixer's (MODEL_SIDE; each pass starts from the artifact's model: TTT changes its adapters); every mixer setting
    of that pass is then replayed from its trace."""
    rows, settings_to_try = [], combinations(grid, base)
    prior, tokens_dev, passes = eval_ngram.ngram_prior(artifact_tables, device), tokens.to(device), {}
    for setting in settings_to_try:
        started = time.perf_counter()
        mix, chosen = {k: setting[k] for k in MIX_DEFAULTS}, {k: setting[k] for k in SETTINGS}
        side = tuple(chosen[k] for k in MODEL_SIDE)
        if side not in passes:
            trace = eval_ngram.MixerTrace()
            result = eval_ngram.score(copy.deepcopy(model), tokens, tables, artifact_tables=artifact_tables, device=device,
                                      trace=trace, eval_budget_s=0.0, **{**settings, **chosen})  # every pass scored in full
            passes[side] = trace, result["targets"], result["bytes"], result["val_bpb"]
        trace, targets, n_bytes, alone = passes[side]
        nll = trace.replay(tokens_dev, int(chosen["ngram_order"]), model.cfg.vocab_size, prior=prior, **mix)
        rows.append({"mix": mix, "settings": chosen, "val_bpb": nll / math.log(2) / n_bytes, "val_loss": nll / targets,
                     "model_alone_bpb": alone, "defaults": setting == base})
        log(f"{len(rows)}/{len(settings_to_try)} {arguments(rows[-1], base)} val_bpb={rows[-1]['val_bpb']:.6f} "
            f"seconds={time.perf_counter() - started:.1f}")
    return sorted(rows, key=lambda row: row["val_bpb"])


def arguments(row: dict, base: dict[str, float], same: str = "(defaults)") -> str:
    """The eval_ngram.py arguments that select a row's setting (only what differs from base; `same` where nothing does)."""
    return " ".join([f"{SETTINGS[k][2]} {v:g}" for k, v in row["settings"].items() if v != base[k]] +
                    [f"--mix {k}={v:g}" for k, v in row["mix"].items() if v != base[k]]) or same


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| rank | val_bpb | vs defaults | vs model alone | " + " | ".join([*MIX_DEFAULTS, *SETTINGS]) + " |",
             "|---" * (len(MIX_DEFAULTS) + len(SETTINGS) + 4) + "|"]
    defaults_bpb = next(row["val_bpb"] for row in rows if row["defaults"])
    for i, row in enumerate(rows, 1):
        mark = " (defaults)" if row["defaults"] else ""
        lines.append(f"| {i}{mark} | {row['val_bpb']:.6f} | {row['val_bpb'] - defaults_bpb:+.6f} | "
                     f"{row['val_bpb'] - row['model_alone_bpb']:+.6f} | "
                     + " | ".join(f"{v:g}" for v in [*row["mix"].values(), *row["settings"].values()]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = eval_ngram.ArgumentParser(prog="records/tune_mix.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--data-dir", help="shard folder; only its training shards are read (default: the artifact's)")
    parser.add_argument("--tokenizer", help="sentencepiece model or 'bytes' (default: the artifact's)")
    parser.add_argument("--holdout-tokens", type=int, help="score the last N training tokens (default: the artifact's "
                        "train_holdout_tokens, the tokens its run never trained on)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help=f"values to try for one MIX_DEFAULTS key or one of {', '.join(SETTINGS)}, repeatable "
                             f"(default grid: {DEFAULT_GRID})")
    parser.add_argument("--ngram-order", type=int, help="n-gram mixture order (default: the artifact's ngram_order)")
    parser.add_argument("--ttt-steps", type=int, default=0, help="score-first TTT steps per chunk (default 0: off, fast)")
    parser.add_argument("--ttt-weights", choices=eval_ngram.TTT_WEIGHTS, help="what TTT trains (default: the artifact's ttt_weights)")
    parser.add_argument("--stride", type=int, help="sliding-window stride (default: the artifact's eval_stride)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--out", help="write tune_mix.md and tune_mix.json into this folder")
    args = parser.parse_args(argv)
    grid = parse_grid(args.grid)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UsageError("records/tune_mix.py scores on one device: run it with python, not torchrun")
    device = eval_ngram.setup_distributed(args.device)[2]
    model, meta, artifact_tables, _ = eval_ngram.load_artifact(args.artifact)
    cfg = artifact_cfg = model.cfg
    settings = {key: value for key, value in dict(data_dir=args.data_dir, tokenizer=args.tokenizer, eval_stride=args.stride,
                                                  ngram_order=args.ngram_order, ttt_steps=args.ttt_steps,
                                                  ttt_weights=args.ttt_weights).items()
                if value is not None}
    cfg = dataclasses.replace(cfg, eval_audit=0, **settings)
    held_out = meta["config"].get("train_holdout_tokens", 0)  # artifacts packed before the key existed held out none
    holdout = held_out if args.holdout_tokens is None else args.holdout_tokens
    for name, value, low in (("holdout-tokens", holdout, 1), ("ngram-order", cfg.ngram_order, 2),
                             ("ttt-steps", cfg.ttt_steps, 0), ("stride", cfg.eval_stride, 1)):
        if value < low:
            raise UsageError(f"--{name} {value}: must be >= {low}" + (" (the artifact trained on its whole training "
                             "split: pass the number of tokens to hold out)" if name == "holdout-tokens" else ""))
    for key in TTT_ONLY:
        if key in grid and max(grid.get("ttt_steps", [cfg.ttt_steps])) == 0:
            raise UsageError(f"--grid {key}=...: test-time training is off (--ttt-steps 0), so every value would score "
                             "alike; pass --ttt-steps K or --grid ttt_steps=...")
    if holdout > held_out:
        print(f"warning: the artifact's run held out only the last {held_out} training tokens; it may have "
              f"trained on some of these {holdout}: settings tuned on them may favour the model over the cache", file=sys.stderr)
    if holdout <= cfg.eval_chunk_tokens:
        print(f"warning: {holdout} tokens are one scoring chunk (eval_chunk_tokens={cfg.eval_chunk_tokens}): the cache only "
              "learns after a chunk is scored, so every setting scores alike; hold out more tokens", file=sys.stderr)
    eval_ngram.check_data(cfg.data_dir, cfg.tokenizer, splits=("train",))
    tables = eval_ngram.byte_tables(cfg.tokenizer, cfg.vocab_size)
    tokens = eval_ngram.holdout_tokens(cfg.data_dir, holdout, cfg.vocab_size)
    model = model.to(device).eval()
    base = defaults(cfg)
    rows = tune(model, tokens, tables, artifact_tables, grid, base, device=device, eval_audit=0, **settings)
    header = (f"Mixer settings for {args.artifact} on the last {holdout} training tokens of {cfg.data_dir} "
              f"(ngram_order={cfg.ngram_order}, ttt_steps={cfg.ttt_steps}, ttt_weights={cfg.ttt_weights}, stride={cfg.eval_stride}), best first:")
    text = table(rows, header)
    best = rows[0]
    # eval_ngram.py scores with the artifact's own settings unless told otherwise (its TTT too, where --ttt-steps is 0 here)
    as_packed = arguments(best, defaults(artifact_cfg), same="none (the artifact's own settings)")
    text += (f"\nbest as eval_ngram.py arguments: {as_packed}\nbest as MIX_DEFAULTS: {best['mix']}\n"
             f"best as config keys: {' '.join(f'{k}={v:g}' for k, v in best['settings'].items())}\n")
    print(text, end="")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        facts = {"artifact": args.artifact, "data_dir": cfg.data_dir, "holdout_tokens": holdout, "ngram_order": cfg.ngram_order,
                 "ttt_steps": cfg.ttt_steps, "ttt_weights": cfg.ttt_weights, "eval_stride": cfg.eval_stride, "grid": grid, "defaults": base, "rows": rows}
        eval_ngram.write_all_or_none(args.out, {"tune_mix.md": text, "tune_mix.json": json.dumps(facts, indent=2) + "\n"})
    return 0


if __name__ == "__main__":
    eval_ngram.run_script(main)
