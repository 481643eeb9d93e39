"""Issue 14: the adopted codec (per stream the smaller of Huffman-only deflate and LZMA) against LZMA alone on whole
artifacts of probe.py's trained weights (every tensor: block matrices, embedding at int8/int7, the rest fp16).

    python records/bench/2026-12-01_issue14_packing/codec.py DIR   # DIR: probe.py's output (weights_*.pt)
"""
import glob
import lzma
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import eval_ngram as E  # noqa: E402

torch.set_num_threads(1)
state = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "weights_*.pt"))):
    state.update(torch.load(path, weights_only=True))
state = {k: v.float() for k, v in state.items()}
n = sum(v.numel() for v in state.values())


def plan(attn: int, mlp: int, embed: int) -> dict[str, int]:  # train_gpt.quant_plan's rule
    return {k: embed if k == "tok_emb.weight" else mlp if ".mlp." in k else attn
            for k, v in state.items() if v.ndim == 2 and v.numel() > 65536}


adopted = E.compress_stream
for attn, mlp, embed in [(6, 5, 8), (5, 5, 8), (5, 5, 7)]:
    started = time.perf_counter()
    new = len(E.pack_artifact(state, {}, plan(attn, mlp, embed)))
    seconds = time.perf_counter() - started
    E.compress_stream = lambda data: ("lzma", lzma.compress(data, preset=9))
    old = len(E.pack_artifact(state, {}, plan(attn, mlp, embed)))
    E.compress_stream = adopted
    print(f"| attn{attn} mlp{mlp} embed{embed} | {n:,} | {old:,} ({old / n:.4f}) | {new:,} ({new / n:.4f}) | "
          f"{100 * (new / old - 1):+.2f}% | {seconds:.1f} |")
