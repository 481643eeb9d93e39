"""Study: the same trace replayed with the cache learning every BLOCK scored tokens (score-first at a finer grain)
instead of after each 65,536-token chunk."""
import os, sys, math, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram
d = torch.load(sys.argv[1], weights_only=False)
block = int(sys.argv[2]); order = int(sys.argv[3]) if len(sys.argv) > 3 else 7
mix = eval(sys.argv[4]) if len(sys.argv) > 4 else {}
tokens = d["tokens"]
mixer = eval_ngram.NGramMixer(tokens, order, 1024, "cpu", **mix)
total = torch.zeros((), dtype=torch.float64)
observed_to = None
t = time.time()
for step in d["steps"]:
    if len(step) == 2:
        continue  # chunk boundaries: this replay learns every block instead
    positions, targets, lp, ent, aux = step
    assert bool((positions[1:] > positions[:-1]).all())
    if observed_to is None:
        observed_to = int(positions[0])
    starts = list(range(0, positions.numel(), block))
    for s in starts:
        sl = slice(s, s + block)
        total += mixer.target_nll(lp[sl], ent[sl], targets[sl], positions[sl], {k: v[sl] for k, v in aux.items()}).sum()
        hi = int(positions[sl][-1]) + 1
        mixer.observe(observed_to, hi)
        observed_to = hi
bpb = total.item() / math.log(2) / d["bytes"]
print(f"block={block} order={order} mix={mix} bpb={bpb:.6f} vs model {bpb - d['model_bpb']:+.6f} seconds={time.time()-t:.0f}", flush=True)
