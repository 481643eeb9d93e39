"""Device-only micro-benchmark (not toolkit code): one attention layer at the eighth protocol's micro-batch (32 x 2048
tokens at batch 524,288), forward + backward, bf16, each SDPA backend forced in turn, for record's heads (8 query /
4 kv, head 64) and the same width as 4 / 2 heads of 128 (num_heads=4 num_kv_heads=2): decides whether wider heads
or another backend make attention, 31% of record's step, cheaper. Prints ms per call (median of 20 after warm-up)."""
import contextlib
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

B, T = 32, 2048


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


for heads, kv, dim in ((8, 4, 64), (4, 2, 128)):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, heads, T, dim, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    k = torch.randn(B, kv, T, dim, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    v = torch.randn(B, kv, T, dim, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    grad = torch.randn_like(q)
    for backend in (None, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        gqa = backend in (None, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION)
        kk, vv = (k, v) if gqa else (k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1))

        def step():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa).backward(grad)
        name = f"H{heads}/KV{kv}/D{dim} {'default' if backend is None else backend.name}"
        try:
            with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                print(f"{name:36s} {timed(step):7.2f} ms fwd+bwd", flush=True)
        except Exception as error:  # a backend that refuses this shape is a finding too
            print(f"{name:36s} failed: {type(error).__name__}: {str(error)[:160]}", flush=True)
print("torch", torch.__version__, torch.cuda.get_device_name(), file=sys.stderr)
