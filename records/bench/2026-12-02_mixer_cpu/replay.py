"""Replay a saved MixerTrace (trace_pass.py) with mixer settings, on the held-out training text it scored.

    python replay.py TRACE.pt grid '{"gate_bias": -8}' '{"recent": 1.0, "order": 9}' ...
"""
import os, sys, json, math, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram
d = torch.load(sys.argv[1], weights_only=False)
trace = eval_ngram.MixerTrace(); trace.steps = d["steps"]
def bpb(order, **mix):
    return trace.replay(d["tokens"], order, 1024, **mix) / math.log(2) / d["bytes"]
print("model alone", d["model_bpb"], flush=True)
mode = sys.argv[2]
if mode == "grid":
    for spec in sys.argv[3:]:
        setting = json.loads(spec); order = setting.pop("order", 7)
        t = time.time(); v = bpb(order, **setting)
        print(f"{v:.6f} {v - d['model_bpb']:+.6f} order={order} {setting} {time.time()-t:.1f}s", flush=True)
