# Can the critics tell real continuations from the model's samples at all? Train a smoke model, fill the replay
# buffer from several wakes, run critic steps only, and report accuracy on a fresh wake batch as steps go.
# From the repo root: python records/bench/2026-11-26_issue7_egt_h200/critic_diag.py "" "egt_lr=1e-3,egt_pool=1" ...
# (one row per argument, comma-separated overrides); NORM=1 RMS-norms the critics' inputs, PAIR=1 feeds them
# consecutive hidden-state pairs (probe-only patches, not in train_gpt.py).
import copy, os, sys, torch
sys.path.insert(0, ".")
import train_gpt as tg
base = ["data_dir=data/local/corpus_sp1024", "tokenizer=../shared/data/tokenizers/fineweb_1024_bpe.model",
        "ngram_order=0", "ttt_steps=0", "iterations=250", "max_wallclock_seconds=0", "compile=off", "ema=False"]
cfg, _ = tg.resolve_config("smoke", base)
torch.manual_seed(0)
model = tg.GPT(cfg)
tg.train(cfg, model, tg.TrainStream(cfg.data_dir, cfg.vocab_size), lambda s: None, 0, 1, torch.device("cpu"))
state = copy.deepcopy(model.state_dict())
if os.environ.get("NORM"):
    orig = tg.Critics.forward
    def fwd(self, states):
        return orig(self, [tg.rms_norm(h.float()) for h in states])
    tg.Critics.forward = fwd
    print("critic inputs rms-normed")
if os.environ.get("PAIR"):
    orig_init, orig_fwd = tg.Critics.__init__, tg.Critics.forward
    def init(self, dim, hidden, count, pool):
        orig_init(self, 2 * dim, hidden, count, pool)
    def fwd(self, states):
        return orig_fwd(self, [tg.rms_norm(torch.cat([h[:, :-1], h[:, 1:]], -1).float()) for h in states])
    tg.Critics.__init__, tg.Critics.forward = init, fwd
    print("critic inputs: consecutive pairs")
for over in [a.split(",") if a else [] for a in sys.argv[1:]]:
    c, _ = tg.resolve_config("smoke", base + ["egt_mode=final"] + over)
    m = tg.GPT(c); m.load_state_dict(state)
    egt = tg.EGT(c, m, 0, 1, torch.device("cpu"), lambda s: None)
    stream = tg.TrainStream(c.data_dir, c.vocab_size)
    for _ in range(4):
        egt.wake(stream)
    held = tg.TrainStream(c.data_dir, c.vocab_size); held.next_batch(128 * 8000, 128, 0, 1, torch.device("cpu"))
    accs = []
    for step in range(301):
        if step % 50 == 0:
            accs.append(round(egt.wake(held)["critic_acc"], 3))
        _, batch = egt.buffer.sample(c.egt_batch)
        egt.critic_step(batch)
    print(over, "buffer", len(egt.buffer), "acc every 50 critic steps", accs, flush=True)
