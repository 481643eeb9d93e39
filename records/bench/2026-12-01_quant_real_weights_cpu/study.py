"""Bytes against packing loss of the artifact's grids, on the EMA weights of a real `record` run (the 140 s row of
../2026-12-01_eighth140s, trained on one H200), packed and unpacked here on CPU by the trainer's own code.

Usage: python study.py EMA_WEIGHTS.pt DATA_DIR OUT.json [eval_tokens] [calib_tokens] [grid numbers, e.g. 0,7,8]
EMA_WEIGHTS.pt: .devdata/extract_weights.py's file (bf16 block matrices, the run's config). Each grid is packed with
train_gpt.pack_model (real artifact bytes), unpacked with eval_ngram.unpack_artifact + train_gpt.model_from_artifact,
and scored, network alone, on the first eval_tokens of the run's held-out TRAINING tokens (train_holdout_tokens; no
validation token is read), windows of seq_len, stride seq_len, as the trainer's packing_loss line does. GPTQ
Hessians come from calib_tokens training tokens drawn as training draws them (never the holdout)."""
import dataclasses, json, sys, time
import torch
sys.path.insert(0, __file__.rsplit("/records/", 1)[0])
import eval_ngram, train_gpt

weights, data_dir, out = sys.argv[1:4]
eval_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
calib_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 65536
saved = torch.load(weights, weights_only=False)
base = dataclasses.replace(train_gpt.config_from_dict(saved["config"]), data_dir=data_dir, device="cpu", compile="off",
                           tokenizer=__file__.rsplit("/records/", 1)[0] + "/../shared/data/tokenizers/fineweb_1024_bpe.model")
model = train_gpt.GPT(base)
model.load_state_dict({k: v.float() for k, v in saved["state"].items()})
model.recurrence_active = True  # recur_start=0.5: on when training ended, as the run packed it
model.eval()
device = torch.device("cpu")
tables = eval_ngram.byte_tables(base.tokenizer, base.vocab_size)
holdout = eval_ngram.holdout_tokens(data_dir, base.train_holdout_tokens, base.vocab_size)[:eval_tokens]
quick = dict(eval_seq_len=0, eval_stride=base.seq_len, ngram_order=0, ttt_steps=0, eval_audit=0, eval_compile=False,
             eval_budget_s=0.0)
params = sum(p.numel() for p in model.parameters())
code_bytes = eval_ngram.code_size(self_extract=base.self_extracting_code)
started = time.time()


def bpb(m) -> float:
    return eval_ngram.score(m.eval(), holdout, tables, device=device, **quick)["val_bpb"]


trained = bpb(model)
print(f"params={params} code_bytes={code_bytes} holdout_tokens={holdout.numel()} bpb_trained={trained:.4f} "
      f"seconds={time.time() - started:.0f}", flush=True)
stream = eval_ngram.TrainStream.for_config(base)
calib = [stream.next_batch(base.seq_len * 4, base.seq_len, 0, 1, device) for _ in range(calib_tokens // (base.seq_len * 4))]
with torch.no_grad():
    hessians = eval_ngram.collect_hessians(model, calib, list(train_gpt.packed_linears(model, base)), device)
print(f"hessians={len(hessians)} calib_tokens={calib_tokens} seconds={time.time() - started:.0f}", flush=True)

GRIDS = [  # name, overrides, GPTQ
    ("record: attn int6, MLP int5, absmax", {}, False),
    ("record: attn int6, MLP int5, absmax", {}, True),
    ("attn int5, MLP int5, absmax", dict(quant_bits=5), False),
    ("attn int5, MLP int5, absmax", dict(quant_bits=5), True),
    ("attn int6, MLP int4, absmax", dict(mlp_quant_bits=4), True),
    ("int6 everywhere, SDClip k=10", dict(mlp_quant_bits=6, quant_clip_sigmas=10.0), True),
    ("int6 everywhere, SDClip k=12.85", dict(mlp_quant_bits=6, quant_clip_sigmas=12.85), True),
    ("int6 everywhere, SDClip k=8", dict(mlp_quant_bits=6, quant_clip_sigmas=8.0), True),
    ("int6 everywhere, SDClip k=6", dict(mlp_quant_bits=6, quant_clip_sigmas=6.0), True),
    ("attn int6, MLP int5, SDClip k=5", dict(quant_clip_sigmas=5.0), True),
    ("int6 everywhere, SDClip k=7", dict(mlp_quant_bits=6, quant_clip_sigmas=7.0), True),
    ("int6 everywhere, SDClip k=8", dict(mlp_quant_bits=6, quant_clip_sigmas=8.0), False),
    ("k=7 + embeddings SDClip int8 k=20", dict(mlp_quant_bits=6, quant_clip_sigmas=7.0, embed_clip_sigmas=20.0), True),
    ("k=7 + embeddings int7 absmax", dict(mlp_quant_bits=6, quant_clip_sigmas=7.0, embed_quant_bits=7), True),
    ("k=7 + embeddings int6 absmax", dict(mlp_quant_bits=6, quant_clip_sigmas=7.0, embed_quant_bits=6), True),
]
if len(sys.argv) > 6:
    GRIDS = [GRIDS[int(i)] for i in sys.argv[6].split(",")]
rows = []
for name, overrides, gptq in GRIDS:
    cfg = dataclasses.replace(base, **overrides)
    blob = train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}, None, hessians if gptq else None)
    state, meta, _ = eval_ngram.unpack_artifact(blob)
    packed = train_gpt.model_from_artifact(state, meta)
    after = bpb(packed)
    rows.append(dict(grid=name, overrides=overrides, gptq=gptq, model_bytes=len(blob), total_bytes=len(blob) + code_bytes,
                     bytes_per_param=len(blob) / params, bpb_packed=after, packing_loss=after - trained))
    print(f"{name:36s} gptq={gptq!s:5s} model_bytes={len(blob):,} bytes/param={len(blob) / params:.4f} "
          f"bpb_packed={after:.4f} loss={after - trained:+.4f} seconds={time.time() - started:.0f}", flush=True)
    json.dump(dict(source=saved["source"], step=saved["step"], params=params, code_bytes=code_bytes, bpb_trained=trained,
                   holdout_tokens=holdout.numel(), calib_tokens=calib_tokens, rows=rows), open(out, "w"), indent=1)
