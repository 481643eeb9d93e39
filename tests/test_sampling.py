"""Sampling: top-p keeps the smallest set of most probable tokens whose mass reaches p, n-gram blocking never
emits a token that repeats an n-gram of the text, and `eval_ngram.py ARTIFACT --generate` is deterministic
for a given --seed."""
import pytest
import torch

import eval_ngram
import train_gpt
from eval_ngram import blocked_tokens, generate, top_p_filter


@pytest.mark.parametrize("p, kept", [(0.3, {1}), (0.5, {1}), (0.6, {1, 3}), (0.75, {1, 3}), (0.76, {1, 2, 3}),
                                     (0.95, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_of_most_probable_tokens_reaching_p(p, kept):
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    filtered = top_p_filter(probs, p)
    assert {i for i in range(4) if filtered[i] > 0} == kept
    mass = sum(probs[i] for i in kept)
    assert all(filtered[i] == pytest.approx(float(probs[i] / mass)) for i in kept)


def test_top_p_on_random_distributions_is_minimal_and_takes_the_top_tokens():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(64, 50, generator=g), -1)
    p = torch.rand(64, generator=g).clamp(0.05, 0.99)
    for row, p_row in zip(probs, p):
        keep = top_p_filter(row[None], float(p_row))[0] > 0  # a batch of one row: filtering works per row
        mass = row[keep].sum()
        assert mass >= p_row - 1e-6  # reaches p
        assert mass - row[keep].min() < p_row  # without its least probable token it would not: the set is minimal
        assert not (~keep).any() or row[keep].min() >= row[~keep].max()  # and it is the most probable tokens


def test_blocked_tokens_are_those_that_would_complete_a_seen_ngram():
    text = [5, 1, 2, 3, 1, 2]
    assert blocked_tokens(text, 3) == {3}  # "1 2" was followed by 3 before
    assert blocked_tokens(text, 2) == {3}  # "2" was followed by 3
    assert blocked_tokens(text, 1) == {1, 2, 3, 5}  # unigrams: every token already written
    assert blocked_tokens(text, 0) == set() and blocked_tokens([1], 3) == set()


def tiny_model(vocab: int = 256):
    cfg, _ = train_gpt.resolve_config("smoke", [f"vocab_size={vocab}", "seq_len=32", "eval_stride=16", "num_layers=2", "recur_layers=0", "value_embed_layers=1", "parallel_start=1", "model_dim=32",
                                                "num_heads=2", "num_kv_heads=1", "enrich_hidden=32", "bigram_buckets=64",
                                                "bigram_dim=8", "tokenizer=bytes"])
    torch.manual_seed(0)
    return train_gpt.GPT(cfg).eval(), cfg


def repeats(text, start, n):
    """Positions from `start` on whose token completes an n-gram that occurs earlier in the text."""
    seen = lambda j: {tuple(text[i:i + n]) for i in range(j - n + 1)}
    return [j for j in range(max(start, n - 1), len(text)) if tuple(text[j - n + 1:j + 1]) in seen(j)]


@pytest.mark.parametrize("n, temperature", [(3, 0.0), (2, 1.0)])
def test_repetition_blocking_never_emits_a_repeated_ngram(n, temperature):
    model, _ = tiny_model(vocab=16)
    prompt = [1, 2, 3, 1, 2]  # the prompt may repeat itself; only what the model writes is constrained
    free = prompt + generate(model, prompt, 60, temperature=temperature, seed=1)
    assert repeats(free, len(prompt), n)  # this model does repeat itself when allowed
    blocked = prompt + generate(model, prompt, 60, temperature=temperature, no_repeat_ngram=n, seed=1)
    assert len(blocked) > len(prompt) + 20 and repeats(blocked, len(prompt), n) == []


def test_generation_is_deterministic_for_a_seed_and_stops_at_bos():
    model, _ = tiny_model()
    options = dict(temperature=1.0, top_p=0.9)
    first = generate(model, [0, 72, 105], 40, seed=7, **options)
    assert first == generate(model, [0, 72, 105], 40, seed=7, **options)
    assert first != generate(model, [0, 72, 105], 40, seed=8, **options)
    stop = first[5]  # the same draws, cut where the stop token (BOS, in the command) first comes
    assert generate(model, [0, 72, 105], 40, seed=7, stop_token=stop, **options) == first[:first.index(stop)]


def test_generate_command_prints_the_same_continuation_for_the_same_seed(tmp_path, capsys):
    model, cfg = tiny_model()
    path = tmp_path / "artifact.pgolf"
    path.write_bytes(train_gpt.pack_model(model, cfg, {"train_time_s": 0.0}))
    args = [str(path), "--generate", "It was the best of times", "--max-new-tokens", "24", "--device", "cpu",
            "--temperature", "1.0", "--top-p", "0.9", "--no-repeat-ngram", "3"]
    outputs = []
    for seed in ("5", "5", "6"):
        assert eval_ngram.main(args + ["--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert 0 < len(outputs[0].encode()) <= 24 * 3 + 1  # at most 24 bytes of text (U+FFFD for a broken one) + newline
    with pytest.raises(eval_ngram.UsageError, match=r"--top-p 0.0: must be in \(0,1\]"):  # run_script: exit 2
        eval_ngram.main(args + ["--top-p", "0"])
