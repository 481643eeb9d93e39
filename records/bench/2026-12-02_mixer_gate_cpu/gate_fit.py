"""How much better could any gate of the n-gram mixer's chain be? From a MixerTrace of one model pass over the held-out
tail (../2026-12-02_mixer_cpu/trace_pass.py), record at every scored position what the mixer reads (model log p of the
target and entropy; per order the context total T, distinct continuations D and the target's count C, score-first,
`recent` 1), then fit gate families on the first half of the positions and score them on the second half.

    python gate_fit.py TRACE.pt TOKENIZER [ORDER] [swap]    (swap: fit on the second half, score the first)
"""
import math, os, sys, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import eval_ngram as E

trace_file, tokenizer = sys.argv[1], sys.argv[2]
order = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 7
d = torch.load(trace_file, weights_only=False)
tokens, K = d["tokens"], order - 1


class Recorder(E.NGramMixer):
    """The default mixer, keeping each scored batch's features as it scores it."""
    rows: list = []

    def target_nll(self, logp_target, entropy, targets, positions, aux):
        offsets = positions.to(self.device) - self.observed_to
        feats = [(total, self._count(n, context * self.vocab_size + targets, pairs, offsets), lam)
                 for n, context, lam, total, pairs in self._mixing(entropy, positions, aux)]
        self.rows.append((positions.clone(), logp_target.double(), entropy.double(),
                          *(torch.stack([f[i] for f in feats], 1) for i in range(3))))
        return super().target_nll(logp_target, entropy, targets, positions, aux)


mixer, nll_sum = Recorder(tokens, order, 1024, torch.device("cpu")), 0.0
for step in d["steps"]:
    if len(step) == 2:
        mixer.observe(*step)
    else:
        positions, targets, logp_target, entropy, aux = step
        nll_sum += mixer.target_nll(logp_target, entropy, targets, positions, aux).sum().item()
print(f"default mixer (replay) {nll_sum / math.log(2) / d['bytes']:.6f}, model alone {d['model_bpb']:.6f}")
pos, lp, H, T, C, LAM = (torch.cat([r[i] for r in Recorder.rows]) for i in range(6))
ns = torch.arange(2, order + 1, dtype=torch.float64)
valid = LAM > 0
gate0 = torch.sigmoid(-7.0 + 0.5 * H[:, None] + 0.75 * (ns - 2))
D = torch.where(valid, T * (gate0 / LAM.clamp(min=1e-300) - 1), 0.0)  # lam = gate * T / (T + D) at beta 1
T = torch.where(valid, T, 0.0)
logT, frac, n2 = torch.log1p(T), D / T.clamp(min=1), ns - 2
nbytes = E.target_bytes(tokens[pos - 1], tokens[pos], E.byte_tables(tokenizer, 1024)).double()
half = (pos < pos.median()) ^ (sys.argv[-1] == "swap")  # h1: the half fitted on


def chain(lam, delta=None):
    """The mixer's chain, orders 2..ORDER: p <- (1 - lam) p + lam * C/T (delta: absolute discounting instead)."""
    p = lp.exp()
    for i in range(K):
        t = T[:, i].clamp(min=1)
        if delta is None:
            p = (1 - lam[:, i]) * p + lam[:, i] * torch.where(valid[:, i], C[:, i] / t, 0.0)
        else:
            pn = (C[:, i] - delta[i]).clamp(min=0) / t + delta[i] * D[:, i] / t * p
            p = torch.where(valid[:, i], (1 - lam[:, i]) * p + lam[:, i] * pn, p)
    return -p.clamp(min=1e-300).log()


def bpb(nll, m):
    return (nll[m].sum() / math.log(2) / nbytes[m].sum()).item()


def wb(gate, beta=1.0):
    return torch.where(valid, gate * T / (T + beta * D).clamp(min=1e-300), 0.0)


base = chain(wb(gate0))
print(f"positions {len(pos)}; bytes first half {nbytes[half].sum():.0f}, second {nbytes[~half].sum():.0f}")
print(f"{'model alone':28s} h1 {bpb(-lp, half):.6f} h2 {bpb(-lp, ~half):.6f}")
print(f"{'defaults':28s} h1 {bpb(base, half):.6f} h2 {bpb(base, ~half):.6f}")


def fit(name, k, nll_of):
    theta = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll_of(theta)[half].mean()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        nll = nll_of(theta)
    print(f"{name:28s} h1 {bpb(nll, half):.6f} h2 {bpb(nll, ~half):.6f} (h2 vs defaults {bpb(nll, ~half) - bpb(base, ~half):+.6f}) "
          f"k={k}", flush=True)


def z(t):  # the default gate's logit, its three weights refit
    return -7 + t[0] + (0.5 + t[1]) * H[:, None] + (0.75 + t[2]) * n2


fit("refit bias/entropy/order/beta", 4, lambda t: chain(wb(torch.sigmoid(z(t)), torch.exp(t[3]))))
fit("+ log(1+T)", 4, lambda t: chain(wb(torch.sigmoid(z(t) + t[3] * logT))))
fit("+ D/T", 4, lambda t: chain(wb(torch.sigmoid(z(t) + t[3] * frac))))
fit("+ log(1+T), D/T", 5, lambda t: chain(wb(torch.sigmoid(z(t) + t[3] * logT + t[4] * frac))))
fit("+ log(1+T), D/T, H log(1+T)", 6, lambda t: chain(wb(torch.sigmoid(z(t) + t[3] * logT + t[4] * frac + t[5] * H[:, None] * logT))))
fit("per order: bias, entropy, beta", 3 * K, lambda t: chain(wb(torch.sigmoid(
    -7 + t[:K] + (0.5 + t[K:2 * K]) * H[:, None] + 0.75 * n2), torch.exp(t[2 * K:]))))
fit("per order, all of the above", 6 * K, lambda t: chain(wb(torch.sigmoid(
    -7 + t[:K] + (0.5 + t[K:2 * K]) * H[:, None] + 0.75 * n2 + t[2 * K:3 * K] * logT + t[3 * K:4 * K] * frac
    + t[4 * K:5 * K] * H[:, None] * logT), torch.exp(t[5 * K:]))))
fit("absolute discount per order", 3 + K, lambda t: chain(torch.where(valid, torch.sigmoid(z(t)), 0.0), torch.sigmoid(t[3:])))
fit("discount + log(1+T), D/T", 5 + K, lambda t: chain(torch.where(valid, torch.sigmoid(z(t) + t[3] * logT + t[4] * frac), 0.0),
                                                      torch.sigmoid(t[5:])))
