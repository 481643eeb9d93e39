"""Seconds the n-gram mixer alone spends on the first N val tokens (no model: random log-probabilities and
entropies), driven like evaluate(): chunks of 65,536 targets, stride-64 windows of 64 targets, 32 windows a batch,
window i of a chunk on rank i % world; rank 0's work timed. Usage: mixer_time.py DATA_DIR N WORLD RECENT ORDER"""
import sys, time, torch
sys.path.insert(0, ".")
import eval_ngram as e
data, n, world, recent, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
tokens = e.load_val_tokens(data)[:n].long()
mixer = e.NGramMixer(tokens, order, 1024, "cpu", recent=recent)
g = torch.Generator().manual_seed(0)
logp, entropy = -torch.rand(n, generator=g) * 5, torch.rand(n, generator=g) * 4
started, total = time.perf_counter(), 0.0
for lo in range(1, n, 65536):
    hi = min(n, lo + 65536)
    windows = list(range(lo, hi, 64))[0::world]
    for b in range(0, len(windows), 32):
        positions = torch.cat([torch.arange(w, min(w + 64, hi)) for w in windows[b:b + 32]])
        total += float(mixer.target_nll(logp[positions], entropy[positions], tokens[positions], positions, {}).sum())
    mixer.observe(lo, hi)
print(f"world={world} rank 0 recent={recent:g} order={order}: {time.perf_counter() - started:.1f} s (checksum {total:.3f})")
