"""Issue 14: packing loss of the tied embedding at int8 and below, on a small model trained on CPU (smoke data).

    python records/bench/2026-12-01_issue14_packing/embed.py [key=value ...]   # smoke preset + overrides
"""
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
import eval_ngram as E  # noqa: E402
import train_gpt as T  # noqa: E402

torch.set_num_threads(1)
cfg, _ = T.resolve_config("smoke", ["model_dim=128", "device=cpu", "ngram_order=0", "ttt_steps=0", *sys.argv[1:]])
torch.manual_seed(cfg.seed)
stream = T.TrainStream(cfg.data_dir, cfg.vocab_size)
val = E.load_val_tokens(cfg.data_dir)[:cfg.eval_max_tokens or None]
tables = E.byte_tables(cfg.tokenizer, cfg.vocab_size)
model = T.GPT(cfg)
facts = T.train(cfg, model, stream, lambda line: None, 0, 1, torch.device("cpu"))
score = lambda m: E.score(m.eval(), val, tables, seq_len=cfg.seq_len, stride=cfg.eval_stride)["val_bpb"]
base = score(model)
print(f"{facts['steps']} steps, {val.numel()} val tokens; unpacked val_bpb {base:.4f}")
print("| embed bits | artifact bytes | val_bpb packed | packing loss |\n|---|---|---|---|")
for bits in (8, 7, 6, 5, 4):
    c = dataclasses.replace(cfg, embed_quant_bits=bits, quant_bits=8, mlp_quant_bits=8)  # isolate the embedding
    blob = T.pack_model(model, c, facts)
    state, meta, _ = E.unpack_artifact(blob)
    packed = score(T.model_from_artifact(state, meta))
    print(f"| {bits} | {len(blob):,} | {packed:.4f} | {packed - base:+.4f} |", flush=True)
