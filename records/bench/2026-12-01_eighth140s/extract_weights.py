"""Device-side: the EMA weights of the run whose final checkpoint is under /tmp/rec (checkpoint_every_s past the
budget saves one at the end, outside training time), as a bf16 state dict split into <= 15 MB parts in argv[2]."""
import glob, os, sys
import torch
sys.path.insert(0, os.getcwd())
import train_gpt as t

path = sorted(glob.glob(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rec/*/*/checkpoint_current.pt"))[0]
ck = torch.load(path, map_location="cpu", weights_only=False)
model = t.GPT(t.Config(**ck["config"]))
model.load_state_dict(ck["model"])
with torch.no_grad():
    for p, e in zip(model.parameters(), ck["ema"]):
        p.copy_(e)
state = {k: v.bfloat16() if v.is_floating_point() and v.ndim == 2 else v for k, v in model.state_dict().items()}
out = sys.argv[2] if len(sys.argv) > 2 else os.environ["OUT"]
os.makedirs(out, exist_ok=True)
torch.save({"state": state, "config": ck["config"], "step": ck["step"], "source": path}, "/tmp/ema_weights.pt")
data = open("/tmp/ema_weights.pt", "rb").read()
part = 15_000_000
for i in range(0, len(data), part):
    open(os.path.join(out, f"ema_weights.pt.part{i // part}"), "wb").write(data[i:i + part])
print(f"ema weights of {path} (step {ck['step']}): {len(data)} bytes in {-(-len(data) // part)} parts")
