"""GPU: the n-gram mixer's per-chunk cost as its tables grow toward FineWeb's val size (62M tokens), rank 0 of 8
(scores 1/8 of each chunk, observes all of it), random model side. Stand-in tokens: the proxy's training shard.
    python mixer_growth.py MODULE_PATH SECONDS [ORDER]   (ORDER: the n-gram order, 7 by default)"""
import importlib.util, sys, time, glob, torch
spec = importlib.util.spec_from_file_location("en", sys.argv[1]); e = importlib.util.module_from_spec(spec)
sys.path.insert(0, "."); spec.loader.exec_module(e)
limit = float(sys.argv[2])
tokens = torch.from_numpy(e.read_shard(glob.glob("/tmp/shards_ordered/*_train_*.bin")[0]).astype("int64"))[:62_000_000].cuda()
n, world, dev = len(tokens), 8, torch.device("cuda")
mixer = e.NGramMixer(tokens, int(sys.argv[3]) if len(sys.argv) > 3 else 7, 1024, dev, recent=1.0)
g = torch.Generator(device=dev).manual_seed(0)
logp, entropy = -torch.rand(n, generator=g, device=dev) * 5, torch.rand(n, generator=g, device=dev) * 4
torch.cuda.synchronize(); started = last = time.perf_counter(); total = 0.0; t_obs = 0.0
for i, lo in enumerate(range(1, n, 65536)):
    hi = min(n, lo + 65536)
    windows = torch.arange(lo, hi, 64, device=dev)[0::world]
    for b in range(0, len(windows), 32):
        w = windows[b:b + 32]
        positions = (w[:, None] + torch.arange(64, device=dev)).flatten()
        positions = positions[positions < hi]
        total += float(mixer.target_nll(logp[positions], entropy[positions], tokens[positions], positions, {}).sum())
    torch.cuda.synchronize(); t0 = time.perf_counter()
    mixer.observe(lo, hi)
    torch.cuda.synchronize(); t_obs += time.perf_counter() - t0
    if i % 50 == 49 or time.perf_counter() - started > limit:
        now = time.perf_counter()
        entries = sum(sum(len(r[0]) for r in t.runs) if hasattr(t, "runs") else len(t[0]) for t in [*mixer.pairs.values(), *mixer.contexts.values()])
        print(f"chunk {i+1:4d} tokens {hi/1e6:6.2f}M entries {entries/1e6:7.1f}M elapsed {now-started:6.1f}s last50 {now-last:5.2f}s observe_total {t_obs:6.1f}s", flush=True)
        last = now
        if now - started > limit:
            break
print("checksum", round(total, 3), "mem GiB", torch.cuda.max_memory_allocated() / 2**30)
