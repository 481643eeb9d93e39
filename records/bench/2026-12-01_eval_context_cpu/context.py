"""Does scoring with a longer window than training's 2,048 help? The EMA weights of a real `record` run (the 140 s
row of ../2026-12-01_eighth140s), scored here on CPU, network alone, on the first N held-out TRAINING tokens (no
validation token is read) with sliding windows of each length at one stride, so every target but the first
window's gets the same count of new tokens per forward and differs only in how much context it sees.

Usage: python context.py EMA_WEIGHTS.pt DATA_DIR OUT.json [tokens] [stride] [lengths, e.g. 1024,2048,4096]"""
import dataclasses, json, sys, time
import torch
sys.path.insert(0, __file__.rsplit("/records/", 1)[0])
import eval_ngram, train_gpt

weights, data_dir, out = sys.argv[1:4]
n_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
stride = int(sys.argv[5]) if len(sys.argv) > 5 else 512
lengths = [int(x) for x in (sys.argv[6] if len(sys.argv) > 6 else "2048,4096").split(",")]
saved = torch.load(weights, weights_only=False)
cfg = dataclasses.replace(train_gpt.config_from_dict(saved["config"]), data_dir=data_dir, device="cpu", compile="off",
                          tokenizer=__file__.rsplit("/records/", 1)[0] + "/../shared/data/tokenizers/fineweb_1024_bpe.model")
model = train_gpt.GPT(cfg)
model.load_state_dict({k: v.float() for k, v in saved["state"].items()})
model.recurrence_active = True
model.eval()
tables = eval_ngram.byte_tables(cfg.tokenizer, cfg.vocab_size)
holdout = eval_ngram.holdout_tokens(data_dir, cfg.train_holdout_tokens, cfg.vocab_size)[:n_tokens]
rows = []
for length in lengths:
    started = time.time()
    result = eval_ngram.score(model, holdout, tables, device=torch.device("cpu"), eval_seq_len=length, eval_stride=stride,
                              ngram_order=0, ttt_steps=0, eval_audit=0, eval_compile=False, eval_budget_s=0.0,
                              eval_batch_windows=8)
    rows.append(dict(eval_seq_len=length, stride=stride, val_bpb=result["val_bpb"], seconds=time.time() - started))
    print(f"eval_seq_len={length} stride={stride} tokens={holdout.numel()} bpb={result['val_bpb']:.4f} "
          f"seconds={time.time() - started:.0f}", flush=True)
    json.dump(dict(source=saved["source"], step=saved["step"], tokens=holdout.numel(), rows=rows), open(out, "w"), indent=1)
