"""Train a small model on CPU with the repo's trainer (train_gpt.train) and save its float (EMA) weights.
Usage: python train_small.py OUT.pt key=value ..."""
import sys, json, time, dataclasses, torch
sys.path.insert(0, '/work/main')
torch.set_num_threads(2)
import train_gpt, eval_ngram

out, overrides = sys.argv[1], sys.argv[2:]
base = ["data_dir=/work/main/data/local/corpus_sp1024", "tokenizer=/work/main/../shared/data/tokenizers/fineweb_1024_bpe.model",
        "vocab_size=1024", "device=cpu", "compile=off", "num_layers=4", "model_dim=384", "num_heads=6", "num_kv_heads=3",
        "mlp_mult=3.0", "seq_len=256", "train_batch_tokens=8192", "grad_accum_steps=1", "recur_layers=", "parallel_start=0",
        "layer0_attention=true", "xsa_layers=4", "warmup_steps=10", "compile_warmup_steps=0", "log_every=25",
        "ngram_order=0", "ttt_steps=0", "train_holdout_tokens=262144", "max_wallclock_seconds=600", "iterations=100000",
        "records_dir=/tmp/rd_study/rec"]
cfg, _ = train_gpt.resolve_config("record", base + overrides)
torch.manual_seed(cfg.seed)
device = torch.device("cpu")
logf = open(out + ".log", "w")
def log(line):
    print(line, flush=True); logf.write(line + "\n"); logf.flush()
log("config " + json.dumps(dataclasses.asdict(cfg)))
stream = eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size, cfg.train_holdout_tokens)
model = train_gpt.GPT(cfg).to(device)
log(f"params={sum(p.numel() for p in model.parameters()):,}")
for n, bits in train_gpt.quant_plan(model, cfg).items():
    log(f"plan {n} {tuple(model.state_dict()[n].shape)} bits={bits}")
facts = train_gpt.train(cfg, model, stream, log, 0, 1, device, checkpoint_dir="")
torch.save({"state": model.state_dict(), "config": dataclasses.asdict(cfg), "recurrence_active": model.recurrence_active,
            "facts": {k: v for k, v in facts.items() if k not in ("hessians", "ngram_counts")},
            "stream_state": stream.state()}, out)
log(f"saved {out}")
