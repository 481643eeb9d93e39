"""The score-first n-gram mixture: matches a brute-force reference, is normalized, never peeks ahead,
and its training-time counts survive packing."""
import math
from collections import defaultdict

import pytest
import torch

from eval_ngram import (MIX_DEFAULTS, ArtifactError, NGramCounts, NGramMixer, decode_counts,
                        encode_counts)
from distributed import spawn_gloo

VOCAB, ORDER = 6, 4
WEIGHTS = {"beta": 0.7, "gate_bias": -1.0, "gate_order": 0.4, "gate_entropy": 0.3, "gate_enrich": 0.5, "recent": 0.0}  # the cache learns after each chunk


def random_run(seed: int, length: int = 400, vocab: int = VOCAB):
    """Tokens with repeated phrases (so high orders get hits), logits and enrich_delta per position."""
    g = torch.Generator().manual_seed(seed)
    phrase = torch.randint(vocab, (12,), generator=g)
    tokens = torch.randint(vocab, (length,), generator=g)
    for start in range(0, length - 12, 50):
        tokens[start:start + 12] = phrase
    logits = 2 * torch.randn(length, vocab, generator=g)
    aux = {"enrich_delta": torch.rand(length, generator=g)}
    return tokens, logits, aux


def chunk_bounds(length: int, size: int = 37):
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def fast_scores(mixer: NGramMixer, logits, aux, chunks) -> torch.Tensor:
    """Drive the mixer the way the evaluation loop does: score chunk k, then observe chunk k."""
    scores = []
    for start, end in chunks:
        positions = torch.arange(start, end)
        part = {k: v[start:end] for k, v in aux.items()}
        scores.append(mixer.nll(logits[start:end], mixer.tokens[start:end], positions, part))
        mixer.observe(start, end)
    return torch.cat(scores)


def reference_scores(tokens, logits, aux, chunks, order, weights, prior_rows=()):
    """The same mixture written plainly: exact context tuples, dicts of counts, a loop per token; the chunk's own
    n-grams before the target count `recent` times each."""
    w = {**MIX_DEFAULTS, **weights}
    counts = {n: defaultdict(lambda: defaultdict(int)) for n in range(2, order + 1)}

    def count_ngrams_ending_at(seq, t, into=counts):
        for n in range(2, order + 1):
            if t >= n - 1:
                into[n][tuple(seq[t - n + 1:t])][seq[t]] += 1

    for row in prior_rows:
        for t in range(len(row)):
            count_ngrams_ending_at(row, t)
    seq = tokens.tolist()
    scores = []
    for start, end in chunks:
        recent = {n: defaultdict(lambda: defaultdict(int)) for n in range(2, order + 1)}
        for p in range(start, end):
            row = logits[p].double().tolist()
            top = max(row)
            z = sum(math.exp(x - top) for x in row)
            probs = [math.exp(x - top) / z for x in row]
            entropy = -sum(q * math.log(q) for q in probs)
            prob = probs[seq[p]]
            for n in range(2, order + 1):
                if p < n - 1:
                    continue
                context = tuple(seq[p - n + 1:p])
                continuations = {v: counts[n][context].get(v, 0) + w["recent"] * recent[n][context].get(v, 0)
                                 for v in {**counts[n][context], **recent[n][context]}}
                total, distinct = sum(continuations.values()), sum(c > 0 for c in continuations.values())
                if total == 0:
                    continue
                logit = (w["gate_bias"] + w["gate_order"] * (n - 2) + w["gate_entropy"] * entropy
                         + w["gate_enrich"] * float(aux["enrich_delta"][p]))
                lam = total / (total + w["beta"] * distinct) / (1 + math.exp(-logit))
                prob = (1 - lam) * prob + lam * continuations.get(seq[p], 0) / total
            scores.append(-math.log(prob))
            count_ngrams_ending_at(seq, p, recent)
        for p in range(start, end):
            count_ngrams_ending_at(seq, p)
    return torch.tensor(scores, dtype=torch.float64)


def test_fast_mixture_matches_bruteforce_reference():
    tokens, logits, aux = random_run(0)
    chunks = chunk_bounds(len(tokens))
    fast = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **WEIGHTS), logits, aux, chunks)
    reference = reference_scores(tokens, logits, aux, chunks, ORDER, WEIGHTS)
    assert torch.allclose(fast, reference, rtol=0, atol=1e-6)
    # the cache must actually matter here, or the comparison proves little
    plain = -torch.log_softmax(logits.double(), -1).gather(1, tokens[:, None]).squeeze(1)
    assert (fast - plain).abs().max() > 0.1


@pytest.mark.parametrize("recent", [0.5, 1.0])
def test_the_chunks_own_earlier_ngrams_count_as_the_reference_counts_them(recent):
    tokens, logits, aux = random_run(7)
    chunks, weights = chunk_bounds(len(tokens)), {**WEIGHTS, "recent": recent}
    fast = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **weights), logits, aux, chunks)
    assert torch.allclose(fast, reference_scores(tokens, logits, aux, chunks, ORDER, weights), rtol=0, atol=1e-6)
    chunk_only = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **WEIGHTS), logits, aux, chunks)
    assert (fast - chunk_only).abs().max() > 0.1


def test_recent_weight_one_is_the_cache_that_learns_after_every_token():
    tokens, logits, aux = random_run(8)
    every_token = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **WEIGHTS), logits, aux, chunk_bounds(len(tokens), 1))
    recent = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **{**WEIGHTS, "recent": 1.0}), logits, aux, chunk_bounds(len(tokens)))
    assert torch.allclose(recent, every_token, rtol=0, atol=1e-12)


def test_recent_ngrams_score_the_same_whatever_batches_a_chunk_is_scored_in(monkeypatch):
    """Ranks score a chunk's windows in interleaved batches, each batch's positions spread over the chunk; the
    chunk's recent n-grams are counted once per chunk (after the first) and every batch order scores alike."""
    tokens, logits, aux = random_run(10)
    weights = {**WEIGHTS, "recent": 1.0}
    whole = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **weights), logits, aux, chunk_bounds(len(tokens)))
    mixer = NGramMixer(tokens, ORDER, VOCAB, "cpu", **weights)
    builds = []
    build = mixer._recent_tables
    monkeypatch.setattr(mixer, "_recent_tables", lambda lo, hi: builds.append((lo, hi)) or build(lo, hi))
    batched = torch.zeros(len(tokens), dtype=torch.float64)
    for start, end in chunk_bounds(len(tokens)):
        rank_batches = [torch.arange(start + r, end, 3)[b:b + 4] for r in range(3) for b in range(0, 13, 4)]
        for positions in reversed(rank_batches) if start % 2 else rank_batches:
            if len(positions):
                part = {k: v[positions] for k, v in aux.items()}
                batched[positions] = mixer.nll(logits[positions], tokens[positions], positions, part)
        mixer.observe(start, end)
    assert torch.allclose(batched, whole, rtol=0, atol=1e-12)
    chunks = chunk_bounds(len(tokens))
    assert [lo for lo, _ in builds[-(len(chunks) - 1):]] == [start for start, _ in chunks[1:]]  # one build per later chunk


def test_with_recent_ngrams_an_already_observed_position_is_refused():
    tokens, logits, aux = random_run(9)
    mixer = NGramMixer(tokens, ORDER, VOCAB, "cpu", recent=1.0)
    mixer.observe(0, 50)
    with pytest.raises(ValueError, match="observed already"):
        mixer.nll(logits[40:60], tokens[40:60], torch.arange(40, 60), {})


def test_prior_from_training_counts_matches_reference_and_changes_scores():
    tokens, logits, aux = random_run(1)
    train_rows = torch.randint(VOCAB, (3, 64), generator=torch.Generator().manual_seed(2))
    prior = NGramCounts(ORDER, VOCAB, "cpu")
    prior.add(train_rows[:2])
    prior.add(train_rows[2:])
    prior = NGramCounts.from_bytes(prior.to_bytes(100_000), "cpu")  # small counts survive packing exactly
    chunks = chunk_bounds(len(tokens))
    with_prior = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", prior=prior, **WEIGHTS), logits, aux, chunks)
    reference = reference_scores(tokens, logits, aux, chunks, ORDER, WEIGHTS, prior_rows=train_rows.tolist())
    without = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **WEIGHTS), logits, aux, chunks)
    assert torch.allclose(with_prior, reference, rtol=0, atol=1e-6)
    assert (with_prior - without).abs().max() > 0.01
    mixer = NGramMixer(tokens, ORDER, VOCAB, "cpu", prior=prior, **WEIGHTS)
    assert (mixer.mixed_distribution(logits, torch.arange(len(tokens)), aux).sum(-1) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("recent", [0.0, 0.5, 1.0])
def test_mixed_distribution_sums_to_one_at_every_position_and_agrees_with_nll(recent):
    tokens, logits, aux = random_run(3)
    mixer = NGramMixer(tokens, 5, VOCAB, "cpu", **{**WEIGHTS, "recent": recent})
    for start, end in chunk_bounds(len(tokens), 50):
        positions = torch.arange(start, end)
        part = {k: v[start:end] for k, v in aux.items()}
        assert (mixer.mixed_distribution(logits[start:end], positions, part).sum(-1) - 1).abs().max() < 1e-12
        full = mixer.mixed_distribution(logits[start:end], positions, part)
        assert (full >= 0).all()
        picked = -full.gather(1, tokens[start:end, None]).squeeze(1).log()
        assert torch.allclose(mixer.nll(logits[start:end], tokens[start:end], positions, part), picked, atol=1e-6)
        mixer.observe(start, end)


@pytest.mark.parametrize("recent", [0.0, 1.0])
def test_changing_future_tokens_never_changes_earlier_scores(recent):
    tokens, logits, aux = random_run(4)
    chunks, weights = chunk_bounds(len(tokens)), {**WEIGHTS, "recent": recent}
    base = fast_scores(NGramMixer(tokens, ORDER, VOCAB, "cpu", **weights), logits, aux, chunks)
    g = torch.Generator().manual_seed(5)
    for cut in (1, 36, 37, 38, 150, 399):
        changed = tokens.clone()
        changed[cut:] = torch.randint(VOCAB, (len(tokens) - cut,), generator=g)
        changed_logits = logits.clone()
        changed_logits[cut:] = torch.randn(len(tokens) - cut, VOCAB, generator=g)
        scores = fast_scores(NGramMixer(changed, ORDER, VOCAB, "cpu", **weights), changed_logits, aux, chunks)
        assert torch.equal(scores[:cut], base[:cut])
        assert not torch.equal(scores[cut:], base[cut:])


def test_context_totals_are_exactly_the_sums_of_their_counts_whatever_the_chunking():
    tokens, _, _ = random_run(6, length=300)
    one_go, chunked = NGramMixer(tokens, 5, VOCAB, "cpu"), NGramMixer(tokens, 5, VOCAB, "cpu")
    one_go.observe(0, 300)
    for start, end in reversed(chunk_bounds(300, 23)):  # any order of the same chunks gives the same tables
        chunked.observe(start, end)
    for n in range(2, 6):
        pair_keys, (pair_counts,) = one_go.pairs[n]
        ctx_keys, (totals, distinct) = one_go.contexts[n]
        contexts, group = torch.unique_consecutive(pair_keys // VOCAB, return_inverse=True)
        assert torch.equal(contexts, ctx_keys)
        assert torch.equal(torch.zeros_like(totals).index_add_(0, group, pair_counts.long()), totals)
        assert torch.equal(torch.bincount(group).int(), distinct)
        assert int(totals.sum()) == 300 - (n - 1)
        for mine, other in zip((pair_keys, pair_counts, ctx_keys, totals, distinct),
                               (chunked.pairs[n][0], *chunked.pairs[n][1], chunked.contexts[n][0],
                                *chunked.contexts[n][1])):
            assert torch.equal(mine, other)


def test_counts_round_trip_through_bytes():
    rows = torch.randint(50, (8, 128), generator=torch.Generator().manual_seed(7))
    counts = NGramCounts(5, 50, "cpu")
    for batch in rows.split(3):
        counts.add(batch)
    loaded = NGramCounts.from_bytes(counts.to_bytes(10_000_000), "cpu")
    assert (loaded.order, loaded.vocab_size) == (5, 50)
    for n in range(2, 6):
        keys, values = counts.table(n)
        assert int(values.sum()) == 8 * (128 - n + 1)
        assert all(torch.equal(a, b) for a, b in zip(loaded.table(n), (keys, values)))


def test_packing_respects_the_byte_budget_by_dropping_the_rarest_ngrams():
    g = torch.Generator().manual_seed(8)
    rows = torch.cat([torch.randint(300, (20, 200), generator=g), torch.arange(200).repeat(20, 1) % 7], 1)
    counts = NGramCounts(4, 300, "cpu")
    counts.add(rows)
    full = counts.to_bytes(10_000_000)
    small = counts.to_bytes(len(full) // 4)
    assert len(small) <= len(full) // 4
    kept = NGramCounts.from_bytes(small, "cpu")
    assert 0 < kept.num_entries() < counts.num_entries()
    # the frequent periodic n-grams survive with their counts; what was dropped was rarer than what was kept
    for n in range(2, 5):
        keys, values = counts.table(n)
        kept_keys, kept_values = kept.table(n)
        assert torch.equal(values[torch.searchsorted(keys, kept_keys)], kept_values)
    assert int(kept.table(2)[1].max()) == int(counts.table(2)[1].max())
    with pytest.raises(ValueError, match="cannot hold"):
        counts.to_bytes(20)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"PGOLF" + b[5:], "bad magic"),
    (lambda b: b[:8] + b"\x09\x00" + b[10:], "format 9"),
    (lambda b: b[:len(b) // 2], "truncated or corrupt"),
    (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:], "truncated or corrupt"),
])
def test_corrupt_packed_counts_give_a_clear_error(damage, message):
    counts = NGramCounts(3, 20, "cpu")
    counts.add(torch.randint(20, (4, 100), generator=torch.Generator().manual_seed(9)))
    with pytest.raises(ArtifactError, match=message):
        NGramCounts.from_bytes(damage(counts.to_bytes(100_000)), "cpu")


def test_count_codes_are_exact_when_small_and_close_when_large():
    small = torch.arange(1, 4096).numpy()
    assert (decode_counts(encode_counts(small)) == small).all()
    large = torch.logspace(3.6, 8.1, 1000, dtype=torch.float64).long().numpy()
    decoded = decode_counts(encode_counts(large))
    assert (abs(decoded - large) / large).max() < 2.5e-4
    assert (decoded[1:] >= decoded[:-1]).all()


def test_weighting_options_are_checked():
    tokens, logits, aux = random_run(10, length=20)
    with pytest.raises(ValueError, match="unknown n-gram weighting"):
        NGramMixer(tokens, ORDER, VOCAB, "cpu", gate_entropi=1.0)
    mixer = NGramMixer(tokens, ORDER, VOCAB, "cpu", gate_enrich=1.0)
    with pytest.raises(ValueError, match="enrich_delta"):
        mixer.nll(logits, tokens, torch.arange(20), {})


def _count_half_and_all_reduce(rank: int, world: int, rows: torch.Tensor, out: str):
    counts = NGramCounts(4, 40, "cpu")
    counts.add(rows[rank::world])
    counts.all_reduce()
    torch.save({n: counts.table(n) for n in range(2, 5)}, f"{out}.{rank}")


def test_all_reduce_over_two_processes_equals_counting_everything_in_one(tmp_path):
    rows = torch.randint(40, (6, 90), generator=torch.Generator().manual_seed(11))
    spawn_gloo(_count_half_and_all_reduce, 2, tmp_path, rows, str(tmp_path / "t"))
    alone = NGramCounts(4, 40, "cpu")
    alone.add(rows)
    for rank in range(2):
        tables = torch.load(tmp_path / f"t.{rank}", weights_only=True)
        for n in range(2, 5):
            assert all(torch.equal(a, b) for a, b in zip(tables[n], alone.table(n)))
