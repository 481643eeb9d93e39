"""Row absmax/RMS and kurtosis of the trained block matrices, and the final model's train loss on training batches."""
import sys; sys.path.insert(0, '/work/main')
import torch; torch.set_num_threads(2)
import train_gpt, eval_ngram
s = torch.load('/tmp/rd_study/model.pt', weights_only=False)
cfg = train_gpt.config_from_dict(s["config"]); m = train_gpt.GPT(cfg); m.load_state_dict(s["state"]); m.eval()
for name in train_gpt.packed_linears(m, cfg):
    w = s["state"][name].float(); rms = w.square().mean(1).sqrt(); am = w.abs().amax(1)
    z = w / rms[:, None]; kurt = (z ** 4).mean()
    print(f"{name:28s} absmax/rms median={float((am / rms).median()):.2f} max={float((am / rms).max()):.2f} kurtosis={float(kurt):.2f}")
st = eval_ngram.TrainStream(cfg.data_dir, cfg.vocab_size, cfg.train_holdout_tokens); st.restore(s["stream_state"])
with torch.no_grad():
    losses = [float(m(*st.next_batch(4096, cfg.seq_len, 0, 1, 'cpu'))) for _ in range(4)]
print("final model train loss on the next 4 training batches (16k tokens, already seen once? epoch=0 so NOT yet trained on):", sum(losses) / 4)
print("facts", {k: v for k, v in s["facts"].items() if k != "losses"}, "logged losses", s["facts"]["losses"])
