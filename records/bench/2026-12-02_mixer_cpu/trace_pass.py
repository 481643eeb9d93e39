"""One model pass of an artifact over the held-out training tail, kept as an eval_ngram.MixerTrace (torch.save).

    python trace_pass.py ARTIFACT HOLDOUT_TOKENS STRIDE OUT.pt DATA_DIR TOKENIZER
"""
import os, sys, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram
artifact, holdout, stride, out, data_dir, tokenizer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
model, meta, tables, _ = eval_ngram.load_artifact(artifact)
cfg = model.cfg
tokens = eval_ngram.holdout_tokens(data_dir, holdout, cfg.vocab_size)
byte_tables = eval_ngram.byte_tables(tokenizer, cfg.vocab_size)
trace = eval_ngram.MixerTrace()
t = time.time()
res = eval_ngram.score(model.eval(), tokens, byte_tables, artifact_tables=tables, trace=trace, eval_stride=stride, ttt_steps=0,
                       eval_budget_s=0.0, eval_audit=0, eval_compile=False, log=print)
print(res, "seconds", time.time() - t, flush=True)
torch.save({"steps": trace.steps, "tokens": tokens, "targets": res["targets"], "bytes": res["bytes"], "model_loss": res["val_loss"],
            "model_bpb": res["val_bpb"], "stride": stride, "artifact": artifact}, out)
