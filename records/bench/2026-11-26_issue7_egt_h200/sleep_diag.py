# Which generator-loss term makes a sleep phase hurt? Train a smoke model once, then run 2 wake/sleep phases
# from the same weights with one term at a time, and compare held-out LM loss before/after.
import copy, sys, torch
sys.path.insert(0, ".")  # run from the repo root: python records/bench/<this folder>/sleep_diag.py 1e-3,3e-4
import train_gpt as tg, eval_ngram
base = ["data_dir=data/local/corpus_sp1024", "tokenizer=../shared/data/tokenizers/fineweb_1024_bpe.model",
        "ngram_order=0", "ttt_steps=0", "iterations=250", "max_wallclock_seconds=0", "compile=off", "ema=False"]
cfg, _ = tg.resolve_config("smoke", base)
torch.manual_seed(0)
model = tg.GPT(cfg)
tg.train(cfg, model, tg.TrainStream(cfg.data_dir, cfg.vocab_size), lambda s: None, 0, 1, torch.device("cpu"))
val = eval_ngram.load_val_tokens(cfg.data_dir)[:64 * 129].view(64, 129)
def val_loss(m):
    with torch.no_grad():
        return m(val[:, :-1], val[:, 1:]).item()
state = copy.deepcopy(model.state_dict())
print("trained", round(val_loss(model), 4), flush=True)
TERMS = [("all", []), ("lm+kl only", ["egt_beta_gan=0", "egt_lambda_fm=0"]), ("adv only", ["egt_lambda_fm=0", "egt_alpha_kl=0"]),
         ("fm only", ["egt_beta_gan=0", "egt_alpha_kl=0"]), ("lm only", ["egt_beta_gan=0", "egt_lambda_fm=0", "egt_alpha_kl=0"])]
for name, over in [(f"{n} lr={lr}", o + [f"egt_lr={lr}"]) for lr in sys.argv[1].split(",") for n, o in TERMS]:
    c, _ = tg.resolve_config("smoke", base + ["egt_mode=final"] + over)
    m = tg.GPT(c); m.load_state_dict(state)
    egt = tg.EGT(c, m, 0, 1, torch.device("cpu"), lambda s: None)
    stream = tg.TrainStream(c.data_dir, c.vocab_size)
    for _ in range(2):
        egt.phase(stream, None, 0)
    egt.finish()
    print(name, round(val_loss(m), 4), "entropy", [round(h["entropy"], 3) for h in egt.history], flush=True)
