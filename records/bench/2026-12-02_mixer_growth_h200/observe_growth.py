"""CPU: seconds of each NGramMixer.observe() as the tables grow over the whole proxy val split (order 7, recent 1).
    python observe_growth.py SHARDS     (from the repository root)"""
import os, sys, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram as e
tokens = e.load_val_tokens(sys.argv[1]).long()
n = len(tokens); print("val tokens", n, flush=True)
mixer = e.NGramMixer(tokens, 7, 1024, "cpu", recent=1.0)
t_obs = []
for i, lo in enumerate(range(1, n, 65536)):
    hi = min(n, lo + 65536)
    t = time.perf_counter(); mixer.observe(lo, hi); dt = time.perf_counter() - t
    size = sum(len(mixer.pairs[k][0]) + len(mixer.contexts[k][0]) for k in mixer.pairs)
    t_obs.append(dt)
    if i % 6 == 0 or hi == n:
        print(f"chunk {i:3d} observed_to {hi:8d} table entries {size/1e6:7.2f}M observe {dt*1000:7.1f} ms", flush=True)
print("total observe s", sum(t_obs))
