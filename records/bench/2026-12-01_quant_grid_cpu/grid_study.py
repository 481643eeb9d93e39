"""Packing loss vs bytes of the artifact's block-matrix grids on a CPU-trained small model.
Usage: python grid_study.py MODEL.pt OUT.json [eval_tokens] [calib_tokens]"""
import sys, json, math, time, dataclasses, collections
sys.path.insert(0, '/work/main')
import torch
torch.set_num_threads(2)
import numpy as np
import train_gpt, eval_ngram

model_path, out_path = sys.argv[1], sys.argv[2]
EVAL_TOKENS = int(sys.argv[3]) if len(sys.argv) > 3 else 262144
CALIB_TOKENS = int(sys.argv[4]) if len(sys.argv) > 4 else 131072
DIAG_TOKENS = 32768
t_start = time.time()
saved = torch.load(model_path, weights_only=False)
cfg = train_gpt.config_from_dict(saved["config"])
model = train_gpt.GPT(cfg)
model.load_state_dict(saved["state"])
model.recurrence_active = saved["recurrence_active"]
model.eval()
float_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
device = torch.device("cpu")
tables = eval_ngram.byte_tables(cfg.tokenizer, cfg.vocab_size)
hold_full = eval_ngram.holdout_tokens(cfg.data_dir, cfg.train_holdout_tokens, cfg.vocab_size)
hold = hold_full[:EVAL_TOKENS]
plan = train_gpt.quant_plan(model, cfg)
linears = train_gpt.packed_linears(model, cfg)          # block matrices: name -> planned bits
embeds = [n for n in plan if train_gpt.is_embedding(n)]
print("block matrices", len(linears), "weights", sum(float_state[n].numel() for n in linears), "embeddings", embeds, flush=True)
results = {"config": dataclasses.asdict(cfg), "eval_tokens": int(hold.numel()), "calib_tokens": CALIB_TOKENS, "rows": []}


def bpb(state):
    model.load_state_dict(state)
    r = eval_ngram.evaluate(lambda x: eval_ngram.model_logits(model, x), hold, tables, cfg.seq_len, cfg.seq_len,
                            batch_windows=32, chunk_tokens=1 << 30, device=device)
    model.load_state_dict(float_state)
    return r["val_bpb"], r["val_loss"]


# ---- Hessians: GPTQ calibration on TRAINING tokens (start of the train split); diagnostics on other tokens
stream = eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size, cfg.train_holdout_tokens)
micro = 4096
calib = [stream.next_batch(micro, cfg.seq_len, 0, 1, device) for _ in range(CALIB_TOKENS // micro)]
t = time.time()
H_cal = eval_ngram.collect_hessians(model, calib, list(linears), device)
print(f"calibration hessians {CALIB_TOKENS} tokens {time.time() - t:.1f}s", flush=True)
other_train = [stream.next_batch(micro, cfg.seq_len, 0, 1, device) for _ in range(DIAG_TOKENS // micro)]  # train, not calib
H_trn2 = eval_ngram.collect_hessians(model, other_train, list(linears), device)
L = cfg.seq_len
n = (DIAG_TOKENS // L) * L
hx = hold_full[:n + 1]
hold_batches = [(hx[:-1].view(-1, L)[i:i + 16], hx[1:].view(-1, L)[i:i + 16]) for i in range(0, n // L, 16)]
H_hold = eval_ngram.collect_hessians(model, hold_batches, list(linears), device)

# ---- embeddings as the trainer plans them (same for every grid)
emb_sigmas = {n: cfg.embed_clip_sigmas for n in embeds}
base_state = {}
for name, t_ in float_state.items():
    if name in embeds:
        q, s = eval_ngram.quantize_rows(t_.reshape(t_.shape[0], -1), plan[name], cfg.embed_clip_sigmas)
        base_state[name] = (q.float() * s.float()[:, None]).reshape(t_.shape)
    elif name in linears:
        base_state[name] = t_.clone()
    else:
        base_state[name] = t_.half().float()   # fp16 as stored


def out_err(d, h):
    return float(torch.einsum("ij,jk,ik->", d.double(), h.double(), d.double()))


def entropy_bits(q):
    counts = torch.bincount((q.flatten().long() + 128), minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum() * q.numel())


def quantize_all(spec, gptq):
    """spec: name -> (bits, sigmas). Returns dequantized block matrices and payload bytes per group."""
    deq, payload, stats = {}, collections.defaultdict(list), collections.defaultdict(float)
    for name in linears:
        w = float_state[name]
        bits, sig = spec[name]
        q, s = (eval_ngram.gptq_rows(w, H_cal[name], bits, sig) if gptq else eval_ngram.quantize_rows(w, bits, sig))
        dq = q.float() * s.float()[:, None]
        deq[name] = dq
        group = "mlp" if ".mlp." in name else "attn"
        payload[group].append(q.numpy().tobytes() + s.numpy().tobytes())
        d = w - dq
        for tag, H in (("cal", H_cal), ("trn2", H_trn2), ("hold", H_hold)):
            stats[f"outerr_{tag}"] += out_err(d, H[name])
            stats[f"outsig_{tag}"] += out_err(w, H[name])
            stats[f"outerr_{tag}_{group}"] += out_err(d, H[name])
            stats[f"outsig_{tag}_{group}"] += out_err(w, H[name])
        stats["werr"] += float(d.square().sum()); stats["wsig"] += float(w.square().sum())
        stats[f"entropy_bytes_{group}"] += entropy_bits(q) / 8 + 2 * q.shape[0]
        stats[f"weights_{group}"] += w.numel()
        stats[f"clamped_{group}"] += float((q.abs() == 2 ** (bits - 1) - 1).sum())
    sizes = {}
    for group, parts in payload.items():
        raw = b"".join(parts)
        sizes[group] = sum(len(eval_ngram.compress_stream(raw[i:i + eval_ngram.LZMA_CHUNK])[1])
                           for i in range(0, len(raw), eval_ngram.LZMA_CHUNK))
    raw = b"".join(b"".join(payload[g]) for g in ("attn", "mlp"))  # not in state order; only for the all-block figure
    sizes["all_joint"] = sum(len(eval_ngram.compress_stream(raw[i:i + eval_ngram.LZMA_CHUNK])[1])
                             for i in range(0, len(raw), eval_ngram.LZMA_CHUNK))
    return deq, sizes, dict(stats)


def uniform(bits, sig):
    return {n: (bits, sig) for n in linears}


GRIDS = [("record: attn int6 absmax + MLP int5 absmax", {n: (6 if ".mlp." not in n else 5, 0.0) for n in linears}),
         ("absmax int5", uniform(5, 0.0)), ("absmax int6", uniform(6, 0.0))] + \
        [(f"SDClip int6 k={k}", uniform(6, k)) for k in (6.0, 8.0, 10.0, 12.85, 16.0)]
if len(sys.argv) > 5:
    GRIDS = GRIDS[:int(sys.argv[5])]

t = time.time()
fb, fl = bpb(float_state)
results["float"] = {"bpb": fb, "loss": fl}
print(f"float bpb={fb:.5f} loss={fl:.5f} ({time.time() - t:.0f}s)", flush=True)
eb, el = bpb(base_state)
results["embed_only"] = {"bpb": eb, "loss": el}
print(f"embeddings+fp16 only bpb={eb:.5f} (+{eb - fb:.5f})", flush=True)
checked = False
for gname, spec in GRIDS:
    for gptq in (False, True):
        t = time.time()
        deq, sizes, stats = quantize_all(spec, gptq)
        state = dict(base_state) | deq
        if not checked:  # the artifact path gives the same weights: pack_artifact + unpack_artifact
            hs = H_cal if gptq else None
            blob = eval_ngram.pack_artifact(float_state, {"config": {}}, plan, None, hs,
                                            {n: spec[n][1] for n in linears} | emb_sigmas)
            st, _, _ = eval_ngram.unpack_artifact(blob)
            diff = max(float((st[k] - state[k]).abs().max()) for k in st)
            print(f"  artifact round trip max|diff|={diff:.3g} artifact_bytes={len(blob)}", flush=True)
            results["artifact_check"] = {"grid": gname, "max_abs_diff": diff, "artifact_bytes": len(blob)}
            checked = True
        qb, ql = bpb(state)
        nw = stats["weights_attn"] + stats["weights_mlp"]
        row = {"grid": gname, "gptq": gptq, "bpb": qb, "loss": ql, "packing_loss_bpb": qb - fb,
               "loss_vs_embed_only": qb - eb, "bytes": sizes, "block_weights": nw,
               "bytes_per_weight": (sizes["attn"] + sizes["mlp"]) / nw,
               "bytes_per_weight_attn": sizes["attn"] / stats["weights_attn"],
               "bytes_per_weight_mlp": sizes["mlp"] / stats["weights_mlp"], **stats,
               "rel_outerr_cal": stats["outerr_cal"] / stats["outsig_cal"],
               "rel_outerr_trn2": stats["outerr_trn2"] / stats["outsig_trn2"],
               "rel_outerr_hold": stats["outerr_hold"] / stats["outsig_hold"],
               "rel_werr": stats["werr"] / stats["wsig"], "seconds": time.time() - t}
        results["rows"].append(row)
        print(f"{gname:45s} {'GPTQ' if gptq else 'RTN '} bpb={qb:.5f} loss=+{qb - fb:.5f} B/w={row['bytes_per_weight']:.4f} "
              f"(attn {row['bytes_per_weight_attn']:.4f} mlp {row['bytes_per_weight_mlp']:.4f}) "
              f"relout cal={row['rel_outerr_cal']:.3e} trn2={row['rel_outerr_trn2']:.3e} hold={row['rel_outerr_hold']:.3e} "
              f"relw={row['rel_werr']:.3e} ({row['seconds']:.0f}s)", flush=True)
        json.dump(results, open(out_path, "w"), indent=1)
print(f"done in {time.time() - t_start:.0f}s")
