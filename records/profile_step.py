r"""records/profile_step.py: where one training step of our trainer spends its time, as a table.

    python records/profile_step.py --data-dir D [--preset record] [key=value ...] [--steps 30] [--trace-steps 5]

Builds the model exactly as train_gpt.py does, compiles and warms it up (untimed), times --steps steps with CUDA
events (median, spread), then records --trace-steps steps with torch.profiler and reduces the trace to: GPU busy
time per step against wall time per step (the rest is the GPU waiting for the host), the phases of a step
(train_gpt's record_function ranges), the top kernels with their share of GPU time, and the host calls that
block (synchronizations, pageable copies). MFU = tokens/s x train_gpt.flops_per_token / 989 TFLOP/s (dense bf16
of an H100/H200). With depth recurrence, the timed step is the recurrent one (the second part of a run). The
table is printed and, with --out, written as markdown with the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import eval_ngram  # noqa: E402
import train_gpt  # noqa: E402

PEAK_FLOPS = 989e12
ANNOTATIONS = ("step.", "Optimizer.")  # record_function ranges, which the trace also lists on the GPU timeline
BLOCKING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy ")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="records/profile_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="shard folder (training shards only are read)")
    p.add_argument("--preset", default="record")
    p.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    p.add_argument("--trace-steps", type=int, default=5, help="steps recorded by torch.profiler")
    p.add_argument("--out", help="write profile.md and profile.json into this folder")
    p.add_argument("--label", default="", help="name of this configuration in the table")
    args, overrides = p.parse_known_args(argv)
    if args.steps < 1 or args.trace_steps < 1:
        raise train_gpt.ConfigError("--steps and --trace-steps must be >= 1")
    return args, overrides


def kernel_table(prof, steps: int, top: int = 30) -> tuple[list[dict], float]:
    """(top kernels by GPU time per step, GPU busy ms per step): device events from the profiler trace."""
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and not event.name.startswith(ANNOTATIONS):
            kernels.setdefault(event.name, []).append(event.time_range.elapsed_us() / 1000)
    busy = sum(sum(v) for v in kernels.values()) / steps
    rows = sorted(({"kernel": name[:90], "calls_per_step": len(v) / steps, "ms_per_step": sum(v) / steps}
                   for name, v in kernels.items()), key=lambda r: -r["ms_per_step"])
    for row in rows:
        row["share"] = row["ms_per_step"] / max(busy, 1e-9)
    return rows[:top], busy


def host_table(prof, steps: int) -> tuple[list[dict], list[dict]]:
    """(phases: record_function ranges with their wall ms per step; blocking host calls per step)."""
    phases, blocking = {}, []
    for avg in prof.key_averages():
        if avg.key.startswith("step."):  # listed once for the host range and once for its GPU span
            phase = phases.setdefault(avg.key, {"phase": avg.key, "cpu_ms_per_step": 0.0, "gpu_ms_per_step": 0.0})
            phase["cpu_ms_per_step"] = max(phase["cpu_ms_per_step"], avg.cpu_time_total / 1000 / steps)
            phase["gpu_ms_per_step"] = max(phase["gpu_ms_per_step"], avg.device_time_total / 1000 / steps)
        if avg.key.startswith(BLOCKING_CALLS) or "Memcpy HtoD (Pageable" in avg.key:
            blocking.append({"call": avg.key, "count_per_step": avg.count / steps,
                             "cpu_ms_per_step": avg.cpu_time_total / 1000 / steps})
    return list(phases.values()), blocking


def profile(argv: list[str]) -> dict:
    args, overrides = parse_args(argv)
    cfg, preset = train_gpt.resolve_config(args.preset, [f"data_dir={args.data_dir}", *overrides])
    _, _, device = eval_ngram.setup_distributed(cfg.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(cfg.seed)
    model = train_gpt.GPT(cfg).to(device)
    stream = eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size)
    trainer = train_gpt.Trainer(cfg, model, stream, 0, 1, device)
    ema = train_gpt.EMA(model, cfg.ema_decay) if cfg.ema else None
    trainer.warm_up(max(cfg.compile_warmup_steps, 3), print)
    model.recurrence_active = bool(model.recur_band)  # time the step as it runs once depth recurrence is on

    def run(step: int) -> None:
        trainer.step(step, 0.5)
        if ema is not None:
            with torch.profiler.record_function("step.ema"):
                ema.update(model)

    times = []
    for step in range(args.steps):  # the host waits after each step here, which the training loop never does
        started = time.perf_counter()
        run(step)
        sync()
        times.append(1000 * (time.perf_counter() - started))
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        started = time.perf_counter()
        for step in range(args.trace_steps):
            run(step)
        sync()
        traced_ms = 1000 * (time.perf_counter() - started) / args.trace_steps
    kernels, busy = kernel_table(prof, args.trace_steps)
    phases, blocking = host_table(prof, args.trace_steps)
    median = statistics.median(times)
    flops = train_gpt.flops_per_token(model, cfg.seq_len)
    result = {"label": args.label or preset, "preset": preset, "overrides": overrides, "gpu": eval_ngram.card_name(device.index or 0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "params": sum(p.numel() for p in model.parameters()),
              "tokens_per_step": cfg.train_batch_tokens, "flops_per_token": flops,
              "attention": "FA3" if train_gpt.flash_attention_3 is not None else "SDPA",
              "ms_step_median": median, "ms_step_min": min(times), "ms_step_max": max(times),
              "mfu": cfg.train_batch_tokens / (median / 1000) * flops / PEAK_FLOPS,
              "traced_ms_per_step": traced_ms, "gpu_busy_ms_per_step": busy,
              "gpu_idle_share": max(0.0, 1 - busy / traced_ms), "phases": phases, "blocking": blocking, "kernels": kernels}
    text = markdown(result)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = "profile_" + "".join(c if c.isalnum() else "_" for c in result["label"])
        with open(os.path.join(args.out, name + ".md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


def markdown(r: dict) -> str:
    lines = [f"## {r['label']}: {r['gpu']}, torch {r['torch']}, attention {r['attention']}",
             f"preset {r['preset']} {' '.join(r['overrides'])}".rstrip(),
             f"{r['params']:,} parameters, {r['tokens_per_step']:,} tokens/step, {r['flops_per_token']:.3e} FLOPs/token",
             "", "| ms/step median (min-max) | MFU | traced ms/step | GPU busy ms/step | GPU idle |", "|---|---|---|---|---|",
             f"| {r['ms_step_median']:.1f} ({r['ms_step_min']:.1f}-{r['ms_step_max']:.1f}) | {100 * r['mfu']:.1f}% | "
             f"{r['traced_ms_per_step']:.1f} | {r['gpu_busy_ms_per_step']:.1f} | {100 * r['gpu_idle_share']:.1f}% |",
             "", "| phase | CPU ms/step | GPU ms/step |", "|---|---|---|"]
    lines += [f"| {p['phase']} | {p['cpu_ms_per_step']:.2f} | {p['gpu_ms_per_step']:.2f} |" for p in r["phases"]]
    lines += ["", "| blocking host call | per step | CPU ms/step |", "|---|---|---|"]
    lines += [f"| {b['call']} | {b['count_per_step']:.1f} | {b['cpu_ms_per_step']:.2f} |" for b in r["blocking"]] or ["| none | | |"]
    lines += ["", "| kernel | calls/step | ms/step | share of GPU time |", "|---|---|---|---|"]
    lines += [f"| `{k['kernel']}` | {k['calls_per_step']:.0f} | {k['ms_per_step']:.2f} | {100 * k['share']:.1f}% |"
              for k in r["kernels"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    eval_ngram.run_script(profile, train_gpt.ConfigError)
