"""Issue 14 scale search: per-row clip-ratio grids against weight MSE, layer output error (real block-5 Hessians) and
Huffman-coded bytes, on probe.py's trained weights; plus GPTQ's CPU time on the 512 x 1536 MLP projection.

    python records/bench/2026-12-01_issue14_packing/scales.py DIR   # DIR: probe.py's output (weights_*.pt, hessians_block5.pt)
"""
import glob
import os
import sys
import time
import zlib

import torch

sys.path.insert(0, os.getcwd())
import eval_ngram as E  # noqa: E402

torch.set_num_threads(1)
folder = sys.argv[1]
state = {}
for path in sorted(glob.glob(os.path.join(folder, "weights_*.pt"))):
    state.update(torch.load(path, weights_only=True))
hessians = torch.load(os.path.join(folder, "hessians_block5.pt"), weights_only=True)
mats = {k: v.float() for k, v in state.items() if k.startswith(("blocks.3.", "blocks.5.", "blocks.7.")) and v.ndim == 2 and v.numel() > 65536}
GRIDS = {"today: 6 ratios 1.0..0.7": E.CLIP_RATIOS, "1.0 only (absmax)": (1.0,),
         "16 ratios 1.0..0.55": tuple(1.0 - 0.03 * i for i in range(16)), "31 ratios 1.0..0.4": tuple(1.0 - 0.02 * i for i in range(31))}


def huffman_bytes(q: torch.Tensor) -> int:
    c = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return len(c.compress(q.numpy().tobytes()) + c.flush())


print(f"{len(mats)} matrices of blocks 3, 5, 7 ({sum(m.numel() for m in mats.values()):,} weights); output error on block 5 "
      "with its calibration Hessian")
print("| bits | clip grid | weight rel. MSE | block-5 output rel. error RTN | GPTQ | Huffman bytes/weight | quantize s |")
print("|---|---|---|---|---|---|---|")
for bits in (6, 5):
    for label, grid in GRIDS.items():
        E.CLIP_RATIOS = grid
        err = norm = size = n = 0.0
        started = time.perf_counter()
        for name, w in mats.items():
            q, s = E.quantize_rows(w, bits)
            err += (q.float() * s.float()[:, None] - w).square().sum().item()
            norm += w.square().sum().item()
            size += huffman_bytes(q) + 2 * len(s)
            n += w.numel()
        seconds = time.perf_counter() - started
        out_rtn = out_gptq = out_norm = 0.0
        for name, h in hessians.items():
            w = state[name].float()
            q, s = E.quantize_rows(w, bits)
            qg, sg = E.gptq_rows(w, h, bits)
            quad = lambda d: torch.einsum("ij,jk,ik->", d, h.float(), d).item()  # ||X d^T||^2 / n
            out_rtn += quad(q.float() * s.float()[:, None] - w)
            out_gptq += quad(qg.float() * sg.float()[:, None] - w)
            out_norm += quad(w)
        print(f"| {bits} | {label} | {err / norm:.5f} | {(out_rtn / out_norm) ** 0.5:.4f} | {(out_gptq / out_norm) ** 0.5:.4f} "
              f"| {size / n:.4f} | {seconds:.1f} |", flush=True)
E.CLIP_RATIOS = GRIDS["today: 6 ratios 1.0..0.7"]
w, h = state["blocks.5.mlp.proj.weight"].float(), hessians["blocks.5.mlp.proj.weight"]
for threads in (1, 2):
    torch.set_num_threads(threads)
    started = time.perf_counter()
    E.gptq_rows(w, h, 6)
    gptq_s = time.perf_counter() - started
    started = time.perf_counter()
    E.quantize_rows(w, 6)
    print(f"512 x 1536 (blocks.5.mlp.proj) on CPU, {threads} thread(s): GPTQ {gptq_s:.2f} s, RTN {time.perf_counter() - started:.3f} s")
