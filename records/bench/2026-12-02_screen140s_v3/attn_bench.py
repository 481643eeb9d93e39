"""Device-only micro-benchmark (not toolkit code): one attention layer of the record's shape (eighth protocol: 48 x
2048 tokens, 8 query heads, 4 kv heads, head 64, bf16), forward + backward, torch SDPA (as train_gpt runs it) against
flex_attention with a causal mask, a document mask (BOS-delimited, lengths like the proxy's) and a sliding window.
Prints ms per call (median of 20 after warm-up). Decides whether flex-based masks could save step time."""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

B, T, H, KV, D = 48, 2048, 8, 4, 64
dev = "cuda"
torch.manual_seed(0)
q = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(B, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(B, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
grad = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
flex = torch.compile(flex_attention, dynamic=False)

# documents: lengths drawn around the proxy's (IMDb ~300 tokens, Wikipedia ~1,500): a new id at each start
lengths = torch.randint(100, 1500, (B, T // 100), generator=torch.Generator().manual_seed(1))
starts = torch.zeros(B, T, dtype=torch.int32)
for b in range(B):
    pos = torch.cumsum(lengths[b], 0)
    starts[b, pos[pos < T]] = 1
doc = torch.cumsum(starts, 1).to(dev)


def causal(b, h, i, j):
    return i >= j


def document(b, h, i, j):
    return (i >= j) & (doc[b, i] == doc[b, j])


def window(n):
    return lambda b, h, i, j: (i >= j) & (i - j < n)


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


def run(attend):
    def step():
        q.grad = k.grad = v.grad = None
        attend().backward(grad)
    return step


rows = [("sdpa causal (train_gpt)", run(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)))]
for name, mod, batch in [("flex causal", causal, None), ("flex document", document, B), ("flex window 1024", window(1024), None),
                         ("flex window 512", window(512), None), ("flex window 256", window(256), None)]:
    mask = create_block_mask(mod, batch, None, T, T, device=dev)
    rows.append((name, run(lambda mask=mask: flex(q, k, v, block_mask=mask, enable_gqa=True))))
for name, step in rows:
    try:
        print(f"{name:28s} {timed(step):7.2f} ms fwd+bwd", flush=True)
    except Exception as error:  # a variant that does not compile here is a finding too
        print(f"{name:28s} failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
print("torch", torch.__version__, torch.cuda.get_device_name(), file=sys.stderr)
