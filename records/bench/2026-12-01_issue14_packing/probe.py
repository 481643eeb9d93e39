"""Issue 14 packing probe: train one record-shaped model, then score it unpacked and packed at several bit widths,
rounded to nearest (RTN) and Hessian-aware (GPTQ), on the same validation tokens; save its weights (fp16) for the
CPU entropy-stage measurements.

    python records/bench/2026-12-01_issue14_packing/probe.py OUT_DIR [key=value ...]   # record preset + overrides
"""
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import eval_ngram as E  # noqa: E402
import train_gpt as T  # noqa: E402

out = sys.argv[1]
cfg, _ = T.resolve_config("record", sys.argv[2:])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(cfg.seed)
stream = T.TrainStream(cfg.data_dir, cfg.vocab_size)
val = E.load_val_tokens(cfg.data_dir)[:cfg.eval_max_tokens or None]
tables = E.byte_tables(cfg.tokenizer, cfg.vocab_size)
model = T.GPT(cfg).to(device)
facts = T.train(cfg, model, stream, print, 0, 1, device)
for m in model.modules():  # score and pack the weights themselves, not QAT's view of them
    m.qat_bits = None
n_params = sum(p.numel() for p in model.parameters())


def score(m) -> float:
    return E.score(m.eval(), val, tables, seq_len=cfg.seq_len, stride=cfg.eval_stride,
                   batch_windows=cfg.eval_batch_windows, device=device)["val_bpb"]


rows = [{"row": "unpacked", "val_bpb": score(model)}]
print(rows[-1], flush=True)
started = time.perf_counter()
hessians = T.calibration_hessians(model, cfg, stream, 0, 1, device)
calib_s = time.perf_counter() - started
for attn, mlp in [(6, 5), (6, 6), (5, 5)]:
    for method, h in [("rtn", None), ("gptq", hessians)]:
        c = dataclasses.replace(cfg, quant_bits=attn, mlp_quant_bits=mlp)
        started = time.perf_counter()
        blob = T.pack_model(model, c, facts, None, h)
        pack_s = time.perf_counter() - started
        state, meta, _ = E.unpack_artifact(blob)
        rows.append({"row": f"attn{attn}_mlp{mlp}_{method}", "bytes": len(blob), "bytes_per_param": len(blob) / n_params,
                     "pack_s": pack_s, "val_bpb": score(T.model_from_artifact(state, meta).to(device))})
        print(rows[-1], flush=True)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "probe.json"), "w") as f:
    json.dump({"config": dataclasses.asdict(cfg), "params": n_params, "steps": facts["steps"], "calib_s": calib_s,
               "rows": rows}, f, indent=1)
state, part, n = {k: v.detach().half().cpu() for k, v in model.state_dict().items()}, {}, 0
for k, v in state.items():  # fp16 weights in files of <= 15 MB (what the device call can send back)
    part[k] = v
    if sum(t.numel() * 2 for t in part.values()) > 15e6:
        torch.save(part, os.path.join(out, f"weights_{n}.pt"))
        part, n = {}, n + 1
torch.save(part, os.path.join(out, f"weights_{n}.pt"))
keep = [k for k in hessians if k.startswith("blocks.5.")]
torch.save({k: hessians[k].cpu() for k in keep}, os.path.join(out, "hessians_block5.pt"))
