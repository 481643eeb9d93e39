"""Study: the cache counting every n-gram that ends before the target (exactly causal: the sequential score-first
cache), vectorized over the whole held-out tail, vs the chunked cache of the trace's pass."""
import os, sys, math, time, json, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram as E
d = torch.load(sys.argv[1], weights_only=False)
tokens = d["tokens"].long(); N = len(tokens); V = 1024
pos = torch.cat([s[0] for s in d["steps"] if len(s) != 2]); lp = torch.cat([s[2] for s in d["steps"] if len(s) != 2])
ent = torch.cat([s[3] for s in d["steps"] if len(s) != 2])
assert len(pos) == d["targets"]

def occurrence_rank(keys):
    """For each element: how many earlier elements (by index) have the same key."""
    order = torch.sort(keys, stable=True).indices
    s = keys[order]
    start = torch.ones_like(s, dtype=torch.bool); start[1:] = s[1:] != s[:-1]
    idx = torch.arange(len(s))
    group_start = torch.cummax(torch.where(start, idx, 0), 0).values
    rank = torch.empty_like(idx); rank[order] = idx - group_start
    return rank, order, group_start

def exclusive_group_cumsum(values, keys):
    order = torch.sort(keys, stable=True).indices
    s = keys[order]; v = values[order].long()
    start = torch.ones_like(s, dtype=torch.bool); start[1:] = s[1:] != s[:-1]
    cs = torch.cumsum(v, 0) - v
    base = torch.cummax(torch.where(start, torch.arange(len(s)), 0), 0).values
    out = torch.empty_like(cs); out[order] = cs - cs[base]
    return out

def tables(order):
    bits = E.context_hash_bits(V)
    hashes, valid = E.context_hashes(tokens, torch.arange(N), order - 1, bits)
    out = {}
    for n in range(2, order + 1):
        ok = valid[n - 2]; ctx = hashes[n - 2][ok]; key = ctx * V + tokens[ok]
        prev_pair = occurrence_rank(key)[0]; prev_ctx = occurrence_rank(ctx)[0]
        distinct = exclusive_group_cumsum(prev_pair == 0, ctx)
        full = [torch.zeros(N, dtype=torch.long) for _ in range(3)]
        for f, v in zip(full, (prev_pair, prev_ctx, distinct)):
            f[ok] = v
        out[n] = full
    return out

cache = {}
def bpb(order=7, beta=1.0, gate_bias=-7.0, gate_order=0.75, gate_entropy=0.5, gate_count=0.0):
    if order not in cache: cache[order] = tables(order)
    prob = lp.double().exp()
    gl = gate_bias + gate_entropy * ent.double()
    for n in range(2, order + 1):
        count, total, distinct = (t[pos].double() for t in cache[order][n])
        gate = torch.sigmoid(gl + gate_order * (n - 2) + gate_count * torch.log1p(total))
        lam = gate * total / (total + beta * distinct).clamp(min=1e-300)
        prob = (1 - lam) * prob + lam * count / total.clamp(min=1)
    return (-prob.log()).sum().item() / math.log(2) / d["bytes"]

print("model alone", d["model_bpb"])
for spec in sys.argv[2:]:
    s = json.loads(spec); t = time.time(); v = bpb(**s)
    print(f"{v:.6f} {v - d['model_bpb']:+.6f} {s} {time.time() - t:.1f}s", flush=True)
