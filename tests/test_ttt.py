"""Score-first test-time training (TTT): a token is never scored by adapters that trained on it, TTT off (or
attached but not moving) gives exactly the plain score, and it adapts the model to the stream it scores."""
import functools
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import eval_ngram
from eval_ngram import ScoreFirstTTT, byte_tables, evaluate, score, write_shard
from train_gpt import GPT, ConfigError, pack_model, resolve_config
from distributed import spawn_gloo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB, SEQ, STRIDE, CHUNK = 64, 32, 16, 48
TABLES = byte_tables("bytes", VOCAB)


def tiny_model(preset: str = "record") -> GPT:
    cfg, _ = resolve_config(preset, [f"vocab_size={VOCAB}", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1",
                                     "model_dim=32", "num_heads=2", "num_kv_heads=1", "bigram_buckets=64", "bigram_dim=16", "enrich_hidden=32",
                                     f"seq_len={SEQ}", "lora_rank=4", "xsa_layers=1", "tied_embed_init_std=0.3",
                                     f"eval_stride={STRIDE}", f"eval_chunk_tokens={CHUNK}", "tokenizer=bytes",
                                     "ngram_order=0", "ttt_steps=0", "eval_audit=0"])  # score() as configured: plain
    torch.manual_seed(0)
    return GPT(cfg).eval()


def repeating_stream(length: int = 400, period: int = 150) -> torch.Tensor:
    """Random tokens repeating every `period` (> context): only something that learned earlier text can predict it."""
    pattern = torch.randint(1, VOCAB, (period,), generator=torch.Generator().manual_seed(1))
    return pattern.repeat(length // period + 1)[:length]


class ScoreRecorder:
    """Stands in for the n-gram mixer in evaluate(): plain cross-entropy, remembered per scored position."""

    def __init__(self, n: int):
        self.scores = torch.full((n,), float("nan"))

    def nll(self, logits, targets, positions, aux):
        values = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        self.scores[positions] = values
        return values

    def observe(self, start, end):
        pass


class PeekingTrainer(ScoreFirstTTT):
    """A broken learner that also trains on the next chunk, before that chunk is scored."""

    def observe(self, start, end):
        super().observe(start, min(end + CHUNK, self.tokens.numel()))


def per_token_scores(tokens: torch.Tensor, learner_class=ScoreFirstTTT, preset: str = "record", weights: str = "lora") -> torch.Tensor:
    model = tiny_model(preset)
    recorder = ScoreRecorder(tokens.numel())
    learner = learner_class(model, tokens, seq_len=SEQ, steps=2, lr=3e-2, lora_rank=4, weights=weights)
    evaluate(lambda x: model.forward_logits(x), tokens, TABLES, SEQ, STRIDE, batch_windows=16, chunk_tokens=CHUNK,
             mixer=recorder, learners=[learner])
    return recorder.scores


def changed_at(tokens: torch.Tensor, j: int) -> torch.Tensor:
    other = tokens.clone()
    other[j] = (other[j] + 1) % VOCAB
    return other


def test_changing_a_future_token_never_changes_an_earlier_score():
    tokens = repeating_stream()
    # TTT adds its own LoRA; TTT trains the model's own adapters; TTT trains every weight
    for preset, weights in (("record", "lora"), ("random_bases", "lora"), ("record", "all")):
        base = per_token_scores(tokens, preset=preset, weights=weights)
        for j in (100, 301):
            scores = per_token_scores(changed_at(tokens, j), preset=preset, weights=weights)
            assert torch.equal(scores[1:j], base[1:j]), (preset, weights, j)
            assert not torch.equal(scores[j + CHUNK:], base[j + CHUNK:])  # TTT carried the change forward


def test_the_check_catches_a_learner_that_peeks_ahead():
    tokens = repeating_stream()
    base, j = per_token_scores(tokens, PeekingTrainer), 250
    assert not torch.equal(per_token_scores(changed_at(tokens, j), PeekingTrainer)[1:j], base[1:j])


def test_ttt_off_or_standing_still_gives_exactly_the_plain_score():
    tokens = repeating_stream()
    plain = score(tiny_model(), tokens, TABLES)
    off = score(tiny_model(), tokens, TABLES, ttt_steps=0)
    still = score(tiny_model(), tokens, TABLES, ttt_steps=3, ttt_lr=0.0)
    assert off["val_loss"] == plain["val_loss"] and off["val_bpb"] == plain["val_bpb"]
    assert still["val_loss"] == plain["val_loss"]  # zero-init LoRA attached, then Adam with lr 0: nothing moves


def test_ttt_adds_lora_only_when_the_model_has_none():
    record, bases = tiny_model(), tiny_model("random_bases")
    own = [p.clone() for p in bases.lora_parameters()]
    ScoreFirstTTT(record, repeating_stream(), seq_len=SEQ, steps=1, lr=1e-3, lora_rank=3)
    ScoreFirstTTT(bases, repeating_stream(), seq_len=SEQ, steps=1, lr=1e-3, lora_rank=3)
    assert {p.shape[0] for p in record.lora_parameters() if p.shape[1] == 32} == {3}
    assert all(torch.equal(a, b) for a, b in zip(own, bases.lora_parameters()))
    assert not any(p.requires_grad for n, p in record.named_parameters() if "lora" not in n)


def test_ttt_adapts_to_the_validation_stream():
    """Tokens from 8 of 64 ids: the untrained model spreads its mass over all 64 until TTT moves it."""
    tokens = torch.randint(1, 9, (600,), generator=torch.Generator().manual_seed(2))
    plain = score(tiny_model(), tokens, TABLES)
    adapted = score(tiny_model(), tokens, TABLES, ttt_steps=2, ttt_lr=3e-2, ttt_rank=8)
    assert adapted["val_loss"] < plain["val_loss"] - 0.5
    every_weight = score(tiny_model(), tokens, TABLES, ttt_steps=2, ttt_lr=0.1, ttt_weights="all")
    assert every_weight["val_loss"] < plain["val_loss"] - 0.5


def test_ttt_on_every_weight_trains_them_all_with_sgd_and_adds_no_adapters():
    model = tiny_model()
    ttt = ScoreFirstTTT(model, repeating_stream(), seq_len=SEQ, steps=1, lr=1e-2, lora_rank=4, weights="all")
    assert not model.lora_parameters() and isinstance(ttt.optimizer, torch.optim.SGD)
    assert [id(p) for p in ttt.params] == [id(p) for p in model.parameters()] and all(p.requires_grad for p in ttt.params)
    with pytest.raises(eval_ngram.UsageError, match="per-document TTT trains adapters"):
        score(tiny_model(), repeating_stream(), TABLES, ttt_steps=1, ttt_weights="all", ttt_doc_chunk=16)
    with pytest.raises(ConfigError, match="ttt_weights='all' ttt_doc_chunk=16: needs per-document adapters"):
        resolve_config("record", ["ttt_weights=all", "ttt_doc_chunk=16"])


def test_ttt_composes_with_the_ngram_mixer():
    """Both learn from each scored chunk; on a stream that repeats beyond the context each helps, together most."""
    def loss(order, steps):
        return score(tiny_model(), repeating_stream(), TABLES, ngram_order=order, ttt_steps=steps, ttt_lr=1e-2,
                     eval_audit=16)["val_loss"]
    neither, ngram, ttt, both = loss(0, 0), loss(3, 0), loss(0, 2), loss(3, 2)
    assert max(ngram, ttt) < neither and both < min(ngram, ttt)


def artifact_beside_val(folder) -> str:
    """The tiny model packed as folder/artifact.pgolf beside a val shard of the repeating stream; the artifact's path."""
    model = tiny_model()
    (folder / "artifact.pgolf").write_bytes(pack_model(model, model.cfg, {"train_time_s": 0.0}))
    write_shard(str(folder / "fineweb_val_000000.bin"), repeating_stream().numpy())
    return str(folder / "artifact.pgolf")


def test_command_line_ttt_flags_reach_the_learner(tmp_path):
    artifact = artifact_beside_val(tmp_path)

    def cli_loss(*flags):
        child = subprocess.run([sys.executable, os.path.join(REPO, "eval_ngram.py"), artifact,
                                "--data-dir", str(tmp_path), "--device", "cpu", "--no-ngram", *flags],
                               capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
        return float(child.stdout.split("val_loss=")[1].split()[0]), child.stdout

    (plain, _), (adapted, _) = cli_loss("--ttt-steps", "0"), cli_loss("--ttt-steps", "2", "--ttt-lr", "1e-2", "--ttt-rank", "4")
    assert adapted < plain - 0.5
    every_weight, out = cli_loss("--ttt-steps", "2", "--ttt-lr", "0.1", "--ttt-weights", "all")
    assert every_weight < plain - 0.5 and f"weights=all params={sum(p.numel() for p in tiny_model().parameters())} " in out


def ttt_score(rank: int = 0, world: int = 1, weights: str = "lora"):
    # one thread here (conftest) and in the ranks (spawn_gloo): the same float arithmetic, so only the rank split differs
    model = tiny_model()
    result = score(model, repeating_stream(), TABLES, ttt_steps=2, ttt_lr=1e-2, ttt_weights=weights, rank=rank, world=world)
    return result["val_loss"], [p.detach() for p in (model.parameters() if weights == "all" else model.lora_parameters())]


def two_rank_worker(rank: int, world: int, out: str, weights: str):
    torch.save(ttt_score(rank, world, weights), f"{out}{rank}.pt")


@pytest.mark.parametrize("weights", ["lora", "all"])
def test_two_ranks_hold_the_same_trained_weights_and_score_like_one(tmp_path, weights):
    spawn_gloo(two_rank_worker, 2, tmp_path, str(tmp_path / "rank"), weights)
    (loss0, trained0), (loss1, trained1) = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    loss, _ = ttt_score(weights=weights)
    assert all(torch.equal(a, b) for a, b in zip(trained0, trained1)) and loss0 == loss1
    assert abs(loss0 - loss) < 1e-4  # only the order of the gradient sums differs


def test_train_gpt_run_as_a_script_trains_its_adapters_at_the_end(tmp_path, byte_shards):
    """The final evaluation of `python train_gpt.py` runs TTT. eval_ngram.py takes the adapters from the model
    (lora_parameters, attach_adapters) and never imports train_gpt: a second copy of train_gpt's classes, imported
    beside the running script, once found no Linear to adapt and crashed the record preset here."""
    tiny = ["num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32", "num_heads=4", "num_kv_heads=2", "enrich_hidden=32", "bigram_buckets=64",
            "bigram_dim=8", "seq_len=32", "train_batch_tokens=256", "eval_stride=16"]
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train_gpt.py"), "--preset", "smoke", *tiny,
                           f"data_dir={byte_shards}", "tokenizer=bytes", "vocab_size=256", "iterations=2",
                           "max_wallclock_seconds=0", "device=cpu", "eval_max_tokens=1024", "eval_chunk_tokens=256",
                           "ngram_order=0", "ttt_steps=1", f"records_dir={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ttt = next(line for line in proc.stdout.splitlines() if line.startswith("ttt "))
    same = GPT(resolve_config("smoke", [*tiny, "vocab_size=256"])[0])
    same.attach_adapters(8, seed=0)  # ttt_rank 8 on every block matrix, as the script's evaluation did
    assert int(ttt.split("adapter_params=")[1].split()[0]) == sum(p.numel() for p in same.lora_parameters()) > 0


def test_the_evaluator_imports_no_trainer():
    """Imports run one way: train_gpt.py imports eval_ngram.py, never the reverse (an artifact's model builder is
    looked up only when an artifact is loaded)."""
    probe = "import sys, eval_ngram; print(sorted(m for m in sys.modules if m in ('train_gpt', '__main__.train_gpt')))"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_compiled_evaluation_is_one_graph_and_scores_like_the_eager_one(monkeypatch):
    """eval_compile: every batch goes through the graph compiled for the first (a short batch is padded, test-time
    training's updates are inputs, not guards), and the score is the eager one's."""
    counter = CompileCounterWithBackend("aot_eager")  # no C++ compiler needed
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch._dynamo.reset()
    tokens = repeating_stream()  # chunks of 3 windows in batches of 2: batches of 2 and 1
    eager, compiled = (score(tiny_model(), tokens, TABLES, eval_compile=on, eval_batch_windows=2, ttt_steps=2,
                             ttt_lr=3e-2) for on in (False, True))
    assert counter.frame_count == 1
    assert compiled["targets"] == eager["targets"] == tokens.numel() - 1
    assert abs(compiled["val_bpb"] - eager["val_bpb"]) < 1e-5
    assert eager["val_bpb"] < score(tiny_model(), tokens, TABLES, eval_batch_windows=2)["val_bpb"]  # TTT learned


class ObserveCounter:
    def __init__(self):
        self.seen = []

    def observe(self, start, end):
        self.seen.append((start, end))


def test_an_eval_on_pace_to_pass_its_budget_drops_the_learners_then_widens_the_stride():
    """A clock that runs 10 s per chunk (~100 targets of 1,000) against a 50 s budget: after the second chunk the
    learners stop, after the third the stride doubles (16 -> 32 = SEQ, then no wider); every target is still scored
    exactly once, and a bigram "model" (no use for context) scores each exactly as without the budget."""
    tokens = repeating_stream(length=1001)
    bigram = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(2))
    forwards = []

    def forward(x):
        forwards.append(x.shape[0])
        return bigram[x], {}

    def run(budget_s):
        ticks, recorder, counter = iter(range(0, 10_000, 10)), ScoreRecorder(tokens.numel()), ObserveCounter()
        result = evaluate(forward, tokens, TABLES, SEQ, STRIDE, batch_windows=4, chunk_tokens=100, mixer=recorder,
                          learners=[counter], budget_s=budget_s, clock=lambda: float(next(ticks)))
        return result, recorder.scores, counter.seen

    plain, plain_scores, plain_seen = run(0.0)
    forwards_plain, forwards[:] = len(forwards), []
    budgeted, scores, seen = run(50.0)
    assert plain["budget_steps"] == [] and [s.split(" (")[0] for s in budgeted["budget_steps"]] == [
        f"learners stopped from target {plain_seen[1][1]}", f"stride 32 from target {plain_seen[2][1]}"]
    assert seen == plain_seen[:2] and len(plain_seen) > 5  # the learner saw two chunks, then nothing
    assert budgeted["targets"] == plain["targets"] == tokens.numel() - 1
    assert torch.isnan(scores[0]) and torch.allclose(scores[1:], plain_scores[1:])  # each target once, same score
    assert len(forwards) < forwards_plain  # wider stride: fewer windows to run


def test_the_command_line_budget_reaches_the_evaluation_and_its_steps_are_printed(tmp_path, capsys):
    common = [artifact_beside_val(tmp_path), "--data-dir", str(tmp_path), "--device", "cpu", "--ttt-steps", "1"]
    eval_ngram.main([*common, "--budget", "1e-9"])  # on pace to pass any budget: every cheaper step is taken
    steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("eval budget: ")]
    assert [line.split(" from")[0] for line in steps] == ["eval budget: learners stopped", f"eval budget: stride {SEQ}"]
    eval_ngram.main([*common, "--budget", "0"])
    assert "eval budget" not in capsys.readouterr().out


def test_scoring_folds_the_adapters_into_the_weights_and_computes_what_training_computes():
    """Without gradients (scoring) a LoRA'd Linear runs one product with B @ A folded into its weight; with gradients
    (test-time training) the adapter path: the same function, and the adapters still get their gradient."""
    model = tiny_model()
    model.attach_adapters(4, seed=0)
    with torch.no_grad():
        for p in model.lora_parameters():
            p.normal_(std=0.2)
    x = repeating_stream()[:SEQ][None]
    trained = model.forward_logits(x)[0]
    with torch.no_grad():
        scored = model.forward_logits(x)[0]
    assert torch.allclose(scored, trained, atol=1e-4) and not torch.equal(scored, trained)  # merged: other rounding
    trained.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lora_parameters())
