"""Study: is the packed model calibrated? Keep full logits of one pass over held-out training tokens, then score
softmax(logits / T) for a few temperatures T (model alone, no cache).

    python temperature.py ARTIFACT HOLDOUT_TOKENS STRIDE DATA_DIR TOKENIZER
"""
import os, sys, math, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram
artifact, holdout, stride, data_dir, tokenizer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
model, meta, tables, _ = eval_ngram.load_artifact(artifact)
tokens = eval_ngram.holdout_tokens(data_dir, holdout, 1024)
byte_tables = eval_ngram.byte_tables(tokenizer, 1024)
class Keep(eval_ngram.MixerTrace):
    def nll(self, logits, targets, positions, aux):
        self.steps.append((logits.float().clone(), targets.clone()))
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none").double()
keep = Keep()
res = eval_ngram.score(model.eval(), tokens, byte_tables, trace=keep, eval_stride=stride, ttt_steps=0, eval_budget_s=0.0,
                       eval_audit=0, eval_compile=False)
print("model alone", res["val_bpb"], flush=True)
scored = [s for s in keep.steps if isinstance(s[0], torch.Tensor)]  # not the (start, end) of an observe
logits, targets = torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored])
for T in (0.85, 0.9, 0.95, 0.97, 1.0, 1.03, 1.05, 1.1):
    nll = torch.nn.functional.cross_entropy(logits / T, targets, reduction="sum").item()
    print(f"T={T} bpb={nll / math.log(2) / res['bytes']:.6f}", flush=True)
