import json, sys
r = json.load(open(sys.argv[1] if len(sys.argv) > 1 else '/tmp/rd_study/results.json'))
rows = r["rows"]
ref = next(x for x in rows if x["grid"].startswith("record") and not x["gptq"])
rb = ref["bytes"]["attn"] + ref["bytes"]["mlp"]
print(f"float holdout bpb {r['float']['bpb']:.5f}; embeddings int8 + fp16 others only: +{r['embed_only']['bpb'] - r['float']['bpb']:.5f}")
print(f"eval tokens {r['eval_tokens']}, calib tokens {r['calib_tokens']}, block weights {ref['block_weights']:,}\n")
print("| grid | rounding | packing loss bpb (q - float) | block bytes | B/weight (attn / mlp) | bits/w (order-0 entropy) | Δbpb vs record RTN | Δbytes vs record RTN | trade: bpb per MB saved | rel. output err (calib / holdout acts) | rel. weight err |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for x in rows:
    b = x["bytes"]["attn"] + x["bytes"]["mlp"]
    ent = 8 * (x["entropy_bytes_attn"] + x["entropy_bytes_mlp"]) / x["block_weights"]
    dl, db = x["packing_loss_bpb"] - ref["packing_loss_bpb"], b - rb
    trade = f"{dl / (-db / 1e6):+.4f}" if abs(db) > 10000 else "-"
    print(f"| {x['grid']} | {'GPTQ' if x['gptq'] else 'RTN'} | {x['packing_loss_bpb']:+.5f} | {b:,} | {x['bytes_per_weight']:.4f} ({x['bytes_per_weight_attn']:.4f} / {x['bytes_per_weight_mlp']:.4f}) | {ent:.3f} | {dl:+.5f} | {db:+,} | {trade} | {x['rel_outerr_cal']:.2e} / {x['rel_outerr_hold']:.2e} | {x['rel_werr']:.2e} |")
print("\nGPTQ vs RTN (same grid):")
print("| grid | RTN loss | GPTQ loss | GPTQ - RTN | out err ratio GPTQ/RTN calib | holdout-acts | other-train-acts | attn hold | mlp hold |")
print("|---|---|---|---|---|---|---|---|---|")
for a in rows:
    if a["gptq"]: continue
    g = next(x for x in rows if x["grid"] == a["grid"] and x["gptq"])
    print(f"| {a['grid']} | {a['packing_loss_bpb']:+.5f} | {g['packing_loss_bpb']:+.5f} | {g['packing_loss_bpb'] - a['packing_loss_bpb']:+.5f} | "
          f"{g['outerr_cal'] / a['outerr_cal']:.3f} | {g['outerr_hold'] / a['outerr_hold']:.3f} | {g['outerr_trn2'] / a['outerr_trn2']:.3f} | "
          f"{g['outerr_hold_attn'] / a['outerr_hold_attn']:.3f} | {g['outerr_hold_mlp'] / a['outerr_hold_mlp']:.3f} |")
