# Tiny-CPU probe of why our frozen-MLP model trails the peer's: variants of freeze_to_basis, one at a time.
# usage: python records/bench/2026-11-26_issue6_random_bases_h200/peer_style_probe.py VARIANT ITERATIONS
# VARIANT: ours | proj_gain1 | gaussian | gaussian_proj_gain1 (measured: proj_gain1, gaussian at 300 iterations)
import sys, torch
sys.path.insert(0, ".")  # run from the repo root
import train_gpt as tg
variant = sys.argv[1]
if "gaussian" in variant:
    def gaussian(rows, cols, seed):
        return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed % 2**62), dtype=torch.float64).float() / cols ** 0.5
    tg.semi_orthogonal = gaussian
if "proj_gain1" in variant:
    original = tg.Linear.freeze_to_basis
    def freeze(self, seed):
        zero = self.zero_init
        self.zero_init = False  # the frozen projection starts as a random map, not as zero
        original(self, seed)
        self.zero_init = zero
        with torch.no_grad():
            self.row_scale.fill_(1.0)
    tg.Linear.freeze_to_basis = freeze
sys.argv = ["train_gpt.py", "--preset", "random_bases", "data_dir=data/local/corpus_sp1024",
            "tokenizer=../shared/data/tokenizers/fineweb_1024_bpe.model", "num_layers=4", "model_dim=128", "num_heads=4",
            "num_kv_heads=2", "seq_len=128", "train_batch_tokens=8192", "grad_accum_steps=1", "iterations=" + sys.argv[2],
            "max_wallclock_seconds=0", "compile=off", "compile_warmup_steps=0", "eval_max_tokens=65536",
            f"records_dir=/tmp/v_{variant}", "log_every=10", "ngram_order=0", "ttt_steps=0"]
sys.modules["train_gpt"] = tg
raise SystemExit(tg.main(sys.argv[1:]))
