# GPU smoke + timing of per-document TTT on a randomly initialised `record`-shaped model (speeds only; its bpb means nothing).
import sys, time
import torch
sys.path.insert(0, ".")
import eval_ngram as e
from train_gpt import GPT, resolve_config
cfg, _ = resolve_config("record", ["tokenizer=.devdata/tokenizers/fineweb_1024_bpe.model"])
torch.manual_seed(0)
model = GPT(cfg).cuda().eval()
model.recurrence_active = True
tokens = e.load_val_tokens("/tmp/ev")[:524288]
tables = e.byte_tables(cfg.tokenizer, 1024)
print(torch.cuda.get_device_name(), "segments", len(e.document_segments(tokens, 1)), flush=True)
for settings in (dict(ttt_doc_chunk=256, ttt_steps=1, ttt_lr=0.01), dict(ttt_doc_chunk=128, ttt_steps=1, ttt_lr=0.01),
                 dict(ttt_doc_chunk=256, ttt_steps=0), dict()):
    torch.cuda.reset_peak_memory_stats()
    started = time.time()
    r = e.score(model, tokens, tables, device="cuda", **settings)
    print(settings or "stream (preset)", f"val_bpb={r['val_bpb']:.4f} eval_time_s={r['eval_time_s']:.1f} wall={time.time() - started:.1f}",
          f"peak_GiB={torch.cuda.max_memory_allocated() / 2**30:.1f} audit_err={r['audit_max_err']:.1e}", flush=True)
