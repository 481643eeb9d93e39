"""Score-first test-time training per document (ttt_doc_chunk > 0): every target is scored once from its own
document, by adapters that only ever trained on earlier targets of that document, and each document starts from the
same adapters whatever came before it."""
import os
import subprocess
import sys

import torch

from eval_ngram import document_segments, evaluate_documents, length_groups, score, write_shard
from distributed import spawn_gloo
from test_ttt import REPO, SEQ, TABLES, VOCAB, ScoreRecorder, tiny_model
from train_gpt import pack_model

BOS, CHUNK = 0, 8  # tokenizer "bytes": BOS is 0


def documents(count: int = 10, seed: int = 3) -> torch.Tensor:
    """BOS + a random 6-token phrase repeated (20-70 tokens): a document says its phrase, then says it again."""
    g, docs = torch.Generator().manual_seed(seed), []
    for _ in range(count):
        length, phrase = int(torch.randint(20, 70, (1,), generator=g)), torch.randint(1, VOCAB, (6,), generator=g)
        docs.append(torch.cat([torch.tensor([BOS]), phrase.repeat(12)[:length]]))
    return torch.cat(docs)


def per_token_scores(tokens: torch.Tensor, steps: int = 2, lr: float = 3e-2, preset: str = "record", window: int = SEQ,
                     group_tokens: int = 4 * SEQ, world: int = 1, rank: int = 0) -> torch.Tensor:
    recorder = ScoreRecorder(tokens.numel())
    evaluate_documents(tiny_model(preset), tokens, TABLES, bos=BOS, window=window, chunk=CHUNK, steps=steps, lr=lr,
                       lora_rank=4, group_tokens=group_tokens, chunk_tokens=100, mixer=recorder, rank=rank, world=world)
    return recorder.scores


def test_segments_cover_every_target_once_and_groups_keep_to_their_token_budget():
    tokens = torch.tensor([BOS, 5, 6, BOS, BOS, 7, 8, 9, BOS])  # an empty document, and a BOS that ends the stream
    segments = document_segments(tokens, BOS)
    assert segments == [(0, 4), (3, 5), (4, 9)]
    targets = [p for s, e in segments for p in range(s + 1, e)]
    assert targets == list(range(1, tokens.numel()))
    assert document_segments(torch.tensor([4, 5, 6]), BOS) == [(0, 3)]  # no BOS at all: one document
    lengths = [(0, 11), (20, 26), (40, 81), (100, 103), (200, 231)]  # 10, 5, 40, 2, 30 targets
    groups = length_groups(lengths, window=32, group_tokens=64)
    assert [[e - s - 1 for s, e in g] for g in groups] == [[2, 5, 10], [30, 40]]
    assert all(len(g) * min(32, max(e - s - 1 for s, e in g)) <= 64 for g in groups)
    assert [len(g) for g in length_groups(lengths, window=32, group_tokens=10_000, max_rows=2)] == [2, 2, 1]


def test_without_learning_each_document_is_scored_alone():
    """TTT off, the window at least the longest document: each target's score is the model's on its document alone."""
    tokens = documents()
    scores = per_token_scores(tokens, steps=0, window=80, group_tokens=200)
    model = tiny_model()
    expected = torch.full_like(scores, float("nan"))
    with torch.no_grad():
        for s, e in document_segments(tokens, BOS):
            logits = model.forward_logits(tokens[s:e - 1][None])[0][0]
            expected[s + 1:e] = torch.nn.functional.cross_entropy(logits, tokens[s + 1:e], reduction="none")
    assert torch.isnan(scores[0]) and torch.allclose(scores[1:], expected[1:], atol=1e-5)


def changed_at(tokens: torch.Tensor, j: int) -> torch.Tensor:
    other = tokens.clone()
    other[j] = other[j] % (VOCAB - 1) + 1  # another token, never BOS: the documents stay where they were
    assert other[j] != tokens[j]
    return other


def test_changing_a_future_token_never_changes_an_earlier_score():
    tokens = documents()
    starts = [s for s, _ in document_segments(tokens, BOS)]
    for preset in ("record", "random_bases"):  # fresh adapters per document; copies of the model's own
        base = per_token_scores(tokens, preset=preset)
        for j in (starts[2] + 30, starts[6] + 12):
            scores = per_token_scores(changed_at(tokens, j), preset=preset)
            assert torch.equal(scores[1:j], base[1:j]), (preset, j)
            end = next(s for s in starts if s > j)
            assert not torch.equal(scores[j + CHUNK:end + 1], base[j + CHUNK:end + 1])  # its document learned the change


def test_each_document_starts_afresh_whatever_came_before():
    """A document's scores do not depend on the documents before it (nor on the rows it shared a batch with)."""
    tokens = documents()
    s, e = document_segments(tokens, BOS)[4]
    alone = per_token_scores(tokens[s:e].clone())
    assert torch.allclose(per_token_scores(tokens)[s + 1:e], alone[1:], atol=1e-6)


def test_learning_per_document_lowers_the_loss_and_every_distribution_stays_normalized():
    tokens = documents()
    frozen, adapted, mixed = (score(tiny_model(), tokens, TABLES, ttt_doc_chunk=CHUNK, eval_audit=16, **options)
                              for options in (dict(ttt_steps=0), dict(ttt_steps=2, ttt_lr=3e-2),
                                              dict(ttt_steps=2, ttt_lr=3e-2, ngram_order=3)))
    assert adapted["val_loss"] < frozen["val_loss"] - 1.0  # the second saying of a phrase is learned from the first
    assert adapted["targets"] == frozen["targets"] == tokens.numel() - 1 and adapted["bytes"] == frozen["bytes"]
    for result in (frozen, adapted, mixed):
        assert result["audit_count"] >= 16 and result["audit_max_err"] < 1e-12 and result["audit_max_mismatch"] < 1e-5


def test_the_model_comes_back_as_it_was():
    tokens = documents(count=3)
    record, bases = tiny_model(), tiny_model("random_bases")
    own = [p.clone() for p in bases.lora_parameters()]
    for model in (record, bases):
        score(model, tokens, TABLES, ttt_doc_chunk=CHUNK, ttt_steps=1, ttt_lr=1e-2)
    assert record.lora_parameters() == []
    assert len(own) == len(bases.lora_parameters()) and all(torch.equal(a, b) for a, b in zip(own, bases.lora_parameters()))


def test_an_eval_on_pace_to_pass_its_budget_stops_learning_and_still_scores_everything():
    tokens = documents(count=12)
    ticks = iter(range(0, 10_000, 10))  # 10 s per clock read: chunks of ~100 targets look far too slow
    result = evaluate_documents(tiny_model(), tokens, TABLES, bos=BOS, window=SEQ, chunk=CHUNK, steps=1, lr=3e-2,
                                lora_rank=4, group_tokens=4 * SEQ, chunk_tokens=100, budget_s=50.0,
                                clock=lambda: float(next(ticks)))
    assert [s.split(" from")[0] for s in result["budget_steps"]] == ["learners stopped"]
    assert result["targets"] == tokens.numel() - 1


def two_rank_worker(rank: int, world: int, out: str):
    torch.save(per_token_scores(documents(), world=world, rank=rank), f"{out}{rank}.pt")


def test_two_ranks_score_each_document_as_one_rank_does(tmp_path):
    spawn_gloo(two_rank_worker, 2, tmp_path, str(tmp_path / "rank"))
    halves = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one = per_token_scores(documents())
    assert all(bool(torch.isnan(h[1:]).any()) for h in halves)  # each rank scored only its share
    both = torch.where(torch.isnan(halves[0]), halves[1], halves[0])
    assert torch.allclose(both[1:], one[1:], atol=1e-6)


def test_the_command_line_flag_scores_per_document(tmp_path):
    model = tiny_model()
    (tmp_path / "artifact.pgolf").write_bytes(pack_model(model, model.cfg, {"train_time_s": 0.0}))
    write_shard(str(tmp_path / "fineweb_val_000000.bin"), documents().numpy())

    def run(*flags):
        child = subprocess.run([sys.executable, os.path.join(REPO, "eval_ngram.py"), str(tmp_path / "artifact.pgolf"),
                                "--data-dir", str(tmp_path), "--device", "cpu", "--no-ngram", "--ttt-steps", "2",
                                "--ttt-lr", "3e-2", *flags], capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
        return child.stdout

    per_document = run("--ttt-doc-chunk", str(CHUNK))
    assert "ttt per document: chunk=8 steps=2" in per_document and "ttt per document" not in run()
    loss = lambda out: float(out.split("val_loss=")[1].split()[0])
    assert loss(per_document) < loss(run("--ttt-doc-chunk", str(CHUNK), "--ttt-steps", "0")) - 1.0
