"""Embedded critics and the wake/sleep loop (EGT): critics learn real vs fake, the filters keep what they should,
replay is prioritized, sleep moves only adapters and critics, the teacher anchor vanishes at equality, and the
`egt` preset trains end to end."""
import numpy as np
import pytest
import torch

import eval_ngram
import train_gpt as tg

VOCAB, PROMPT, GEN = 64, 16, 16
TINY = [f"vocab_size={VOCAB}", "num_layers=4", "recur_layers=1,2", "value_embed_layers=3", "parallel_start=3", "model_dim=32", "num_heads=2", "num_kv_heads=1", "mlp_mult=2",
        "xsa_layers=1", "bigram_buckets=64", "bigram_dim=8", "enrich_hidden=32", f"egt_prompt_len={PROMPT}",
        f"egt_gen_len={GEN}", "egt_pool=4", "egt_critic_hidden=32", "egt_prompts=8", "egt_batch=8", "device=cpu"]


def counting_text(n: int, g: torch.Generator) -> torch.Tensor:
    """'Real' text: each row counts upwards (mod VOCAB) from a random start."""
    return (torch.randint(VOCAB, (n, 1), generator=g) + torch.arange(PROMPT + GEN)) % VOCAB


def tiny_egt(*overrides: str) -> tuple[tg.GPT, tg.EGT]:
    cfg, _ = tg.resolve_config("egt", TINY + list(overrides))
    torch.manual_seed(0)
    model = tg.GPT(cfg)
    return model, tg.EGT(cfg, model, 0, 1, torch.device("cpu"), lambda line: None)


def test_critics_learn_to_tell_real_text_from_a_unigram_fake():
    model, egt = tiny_egt()
    g = torch.Generator().manual_seed(0)

    def batch(n):
        real = counting_text(n, g)
        unigram_fake = real[:, PROMPT:].flatten()[torch.randint(n * GEN, (n, GEN), generator=g)]  # same token frequencies
        return dict(prompt=real[:, :PROMPT], real=real[:, PROMPT:], fake=unigram_fake)

    for _ in range(300):  # critic rate 3 x egt_lr = 9e-4
        egt.critic_step(batch(32))
    held_out = batch(256)
    with torch.no_grad():
        real_logit = egt.critics(egt.states(torch.cat([held_out["prompt"], held_out["real"]], 1))[0])[0].mean(0)
        fake_logit = egt.critics(egt.states(torch.cat([held_out["prompt"], held_out["fake"]], 1))[0])[0].mean(0)
    accuracy = ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean()) / 2
    assert accuracy > 0.9


def test_uncertainty_band_keeps_in_band_prompts_topped_up_by_entropy():
    uncertainty = torch.tensor([0.10, 0.35, 0.50, 0.59, 0.60, 0.70, 0.20, 0.30])
    entropy = torch.tensor([0.9, 0.0, 0.0, 0.0, 0.1, 0.5, 0.7, 0.2])
    # in band (open interval): 1, 2, 3; hard_frac 0.6 -> 2 more, the highest-entropy outsiders: 0 then 6
    assert tg.select_prompts(uncertainty, entropy, (0.3, 0.6), 0.6, 0).tolist() == [1, 2, 3, 0, 6]
    assert tg.select_prompts(uncertainty, entropy, (0.3, 0.6), 1.0, 0).tolist() == [1, 2, 3]
    # min_keep 7: the hard share round(0.6 * 7) = 4 takes the first outsider on the band's edge (4: 0.60), then entropy
    assert tg.select_prompts(uncertainty, entropy, (0.3, 0.6), 0.6, 7).tolist() == [1, 2, 3, 4, 0, 6, 5]


def test_an_empty_band_keeps_the_prompts_nearest_to_it_when_asked_to():
    uncertainty, entropy = torch.tensor([0.9, 0.1, 0.95, 0.7]), torch.tensor([1.0, 2.0, 3.0, 0.0])
    assert tg.select_prompts(uncertainty, entropy, (0.3, 0.6), 0.6, 0).tolist() == []
    # keep 3: hard share 2 = the nearest (3: 0.1 away, 1: 0.2 away), then the highest-entropy rest (2)
    assert tg.select_prompts(uncertainty, entropy, (0.3, 0.6), 0.6, 3).tolist() == [3, 1, 2]


def test_jaccard_filter_drops_near_duplicates_of_kept_samples_only():
    samples = torch.tensor([[[1, 2, 3, 4],    # kept: first
                             [1, 2, 3, 3],    # {1,2,3} vs {1,2,3,4}: Jaccard 0.75, diversity 0.25 < 0.35 -> dropped
                             [5, 6, 7, 8],    # disjoint -> kept
                             [1, 2, 3, 9]]])  # 0.6 to the first (diversity 0.4, kept); 0.75 only to the dropped one
    similarity = tg.jaccard_similarity(samples, vocab=10)
    assert similarity[0, 0, 1].item() == pytest.approx(0.75) and similarity[0, 0, 3].item() == pytest.approx(0.6)
    assert tg.diverse_samples(similarity, 0.35).tolist() == [[True, False, True, True]]
    assert tg.diverse_samples(similarity, 0.45).tolist() == [[True, False, True, False]]


def test_replay_buffer_keeps_the_highest_priorities_and_samples_in_proportion():
    buffer = tg.ReplayBuffer(capacity=3, device=torch.device("cpu"))
    buffer.push({"id": torch.tensor([10, 11, 12])}, torch.tensor([0.1, 0.9, 0.5]))
    buffer.push({"id": torch.tensor([13, 14])}, torch.tensor([0.7, 0.2]))
    assert buffer.items["id"].tolist() == [11, 13, 12] and buffer.priority.tolist() == pytest.approx([0.9, 0.7, 0.5])
    torch.manual_seed(0)
    index, batch = buffer.sample(21_000)
    counts = torch.bincount(index, minlength=3).float() / 21_000
    assert counts.tolist() == pytest.approx([0.9 / 2.1, 0.7 / 2.1, 0.5 / 2.1], abs=0.02)
    assert torch.equal(batch["id"], buffer.items["id"][index])


def test_sleep_moves_block_matrices_by_a_low_rank_delta_only_and_the_ema_with_them():
    model, egt = tiny_egt("egt_critic_steps=5", "egt_gen_steps=3")
    ema = tg.EMA(model, 0.9)
    g = torch.Generator().manual_seed(1)
    real = counting_text(16, g)
    fake = torch.randint(VOCAB, (16, GEN), generator=g)
    egt.buffer.push(dict(prompt=real[:, :PROMPT], fake=fake, real=real[:, PROMPT:], uncertainty=torch.full((16,), 0.5),
                         reward=torch.zeros(16)), torch.rand(16, generator=g))
    before = {n: p.detach().double() for n, p in model.named_parameters()}
    ema_before = [e.double() for e in ema.params]
    critics_before = [p.detach().clone() for p in egt.critics.parameters()]
    adapted = {id(m.weight) for m in model.blocks.modules() if isinstance(m, tg.Linear)}  # every one is trained here
    assert adapted and not model.lora_parameters()  # no adapters outside sleep: the main steps pay nothing
    egt.sleep(ema)
    assert not model.lora_parameters() and not egt.adapted  # merged and removed
    for (name, p), e, e_before in zip(model.named_parameters(), ema.params, ema_before):
        delta = p.detach().double() - before[name]
        if id(p) in adapted:
            assert 1 <= torch.linalg.matrix_rank(delta, rtol=1e-3) <= 8, name  # moved, within the adapters' rank 8
            assert torch.allclose(e.double() - e_before, delta, atol=1e-6), name  # the packed EMA keeps sleep's work
        else:
            assert delta.abs().max() == 0, name  # gains, embeddings, scales: untouched
    assert all(not torch.equal(a, b) for a, b in zip(critics_before, egt.critics.parameters()))


def test_on_a_random_bases_model_sleep_trains_its_own_lora_and_nothing_else():
    model, egt = tiny_egt("random_bases=mlp", "lora_rank=4", "egt_critic_steps=5", "egt_gen_steps=3")
    ema = tg.EMA(model, 0.9)
    g = torch.Generator().manual_seed(1)
    real = counting_text(16, g)
    egt.buffer.push(dict(prompt=real[:, :PROMPT], fake=torch.randint(VOCAB, (16, GEN), generator=g), real=real[:, PROMPT:],
                         uncertainty=torch.full((16,), 0.5), reward=torch.zeros(16)), torch.rand(16, generator=g))
    shared = {id(p) for p in model.lora_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    egt.sleep(ema)
    assert not egt.adapted and {id(p) for p in model.lora_parameters()} == shared  # no adapters of EGT's own
    for (name, p), e in zip(model.named_parameters(), ema.params):
        if id(p) in shared:
            assert torch.equal(e, p) and (name.endswith("lora_a") or not torch.equal(p, before[name])), name
        else:
            assert torch.equal(p, before[name]), name


def test_policy_gradient_lowers_the_costlier_samples_probability_and_ignores_a_constant_cost():
    logp = torch.zeros(3, requires_grad=True)
    tg.policy_gradient_loss(torch.tensor([2.0, 0.0, 1.0]), logp).backward()
    assert logp.grad.tolist() == pytest.approx([1 / 3, -1 / 3, 0.0])  # descent: sample 0 down, sample 1 up
    logp.grad = None
    tg.policy_gradient_loss(torch.full((3,), 5.0), logp).backward()
    assert logp.grad.abs().max() == 0


def test_generator_step_leaves_the_critics_alone():
    model, egt = tiny_egt()
    g = torch.Generator().manual_seed(4)
    batch = dict(prompt=counting_text(4, g)[:, :8], real=counting_text(4, g)[:, :4], fake=torch.randint(0, VOCAB, (4, 4), generator=g))
    lora = egt.attach_adapters()
    egt.generator_loss(batch).backward()
    assert all(p.grad is None for p in egt.critics.parameters())
    assert lora and all(p.grad is not None for p in lora)


def test_kl_to_teacher_is_zero_when_student_equals_teacher():
    model, egt = tiny_egt()
    egt.teacher.load_state_dict(model.state_dict())
    x = counting_text(4, torch.Generator().manual_seed(2))
    student, teacher = model.forward_logits(x)[0], egt.teacher.forward_logits(x)[0]
    assert tg.kl_to_teacher(student, teacher).item() == 0.0
    assert tg.kl_to_teacher(student, teacher + torch.randn_like(teacher)).item() > 0.0


def test_with_depth_recurrence_on_the_teacher_runs_the_same_blocks_as_the_model():
    model, egt = tiny_egt("recur_layers=1,2", "egt_critic_steps=0", "egt_gen_steps=0")
    with torch.no_grad():  # blocks that are not the identity, so running the band twice changes the logits
        [p.add_(0.2 * torch.randn_like(p)) for p in model.parameters()]
    model.recurrence_active = True  # switched on by training after egt was made (and its teacher copied)
    real = counting_text(4, torch.Generator().manual_seed(2))
    egt.buffer.push(dict(prompt=real[:, :PROMPT], fake=real[:, PROMPT:], real=real[:, PROMPT:],
                         uncertainty=torch.full((4,), 0.5), reward=torch.zeros(4)), torch.ones(4))
    egt.sleep(None)  # no EMA: the teacher takes the model's weights
    with torch.no_grad():
        assert tg.kl_to_teacher(model.forward_logits(real)[0], egt.teacher.forward_logits(real)[0]).item() < 1e-6


def test_each_critic_reads_the_same_block_before_and_after_the_recurrence_switches_on():
    model, egt = tiny_egt("egt_critic_every=1")
    seq = torch.randint(0, VOCAB, (2, PROMPT + GEN))
    assert egt.watched == [0, 1, 2, 3]  # block indices, one critic each, whatever runs twice
    for active in (False, True):
        model.recurrence_active = active
        outputs = []
        with torch.no_grad():
            model.hidden(seq, outputs)
            states = egt.states(seq)[0]
        runs = model.layer_order()  # with the recurrence: 0, 1, 2, 1, 2, 3
        for block, state in zip(egt.watched, states):
            last = max(r for r, b in enumerate(runs) if b == block)
            assert torch.equal(state, outputs[last][:, -GEN:])


def test_exact_match_verifier_rewards_the_matching_prefix():
    real = torch.tensor([[1, 2, 3, 4]])
    samples = torch.tensor([[1, 2, 3, 4], [1, 2, 9, 4], [9, 2, 3, 4]])
    assert tg.exact_match_reward(samples, real).tolist() == [1.0, 0.5, 0.0]


def test_egt_prompts_must_fit_a_shuffled_window_before_anything_runs():
    with pytest.raises(tg.ConfigError, match="EGT prompts with their continuations within seq_len"):
        tg.resolve_config("smoke", ["egt_mode=interleaved", "seq_len=64", "egt_prompt_len=60", "egt_gen_len=8"])
    assert tg.resolve_config("smoke", ["egt_mode=interleaved", "seq_len=64", "egt_prompt_len=56", "egt_gen_len=8"])
    assert tg.resolve_config("smoke", ["egt_mode=interleaved", "seq_len=64", "egt_prompt_len=60", "egt_gen_len=8",
                                       "train_order=sequential"])


@pytest.mark.parametrize("mode", ["interleaved", "final"])
def test_egt_preset_trains_end_to_end_and_leaves_a_plain_gpt(tmp_path, mode):
    g = torch.Generator().manual_seed(3)
    eval_ngram.write_shard(str(tmp_path / "syn_train_000000.bin"), counting_text(400, g).flatten().numpy().astype(np.uint16))
    cfg, _ = tg.resolve_config("egt", TINY + [f"data_dir={tmp_path}", "seq_len=32", "eval_stride=16", "train_batch_tokens=256", "grad_accum_steps=1",
                                              "max_wallclock_seconds=0", "iterations=6", "compile=off", "compile_warmup_steps=0",
                                              "egt_every=3", "egt_critic_steps=3", "egt_gen_steps=2", f"egt_mode={mode}",
                                              "egt_final_frac=0.5", "egt_band_low=0", "egt_band_high=1"])
    torch.manual_seed(0)
    model, lines = tg.GPT(cfg), []
    facts = tg.train(cfg, model, eval_ngram.TrainStream.for_config(cfg, holdout_tokens=0), lines.append, 0, 1, torch.device("cpu"))
    egt_lines = [line for line in lines if line.startswith("egt ")]
    assert facts["steps"] == (6 if mode == "interleaved" else 3)
    assert facts["egt"]["phases"] == len(egt_lines) and (len(egt_lines) == 2 if mode == "interleaved" else len(egt_lines) >= 1)
    assert all(k in egt_lines[0] for k in ("step=", "critic_acc=", "in_band=", "kept=", "sleep_ms="))
    assert facts["egt"]["history"][0]["in_band"] == 1.0 and facts["egt"]["history"][0]["kept"] > 0
    assert not model.lora_parameters() and set(model.state_dict()) == set(tg.GPT(cfg).state_dict())


def test_a_sleep_leaves_the_compiled_main_step_as_it_was(monkeypatch):
    model, egt = tiny_egt()
    torch._dynamo.reset()
    step = torch.compile(model, backend="eager")  # dynamo's guards, without needing a C++ compiler
    x = counting_text(4, torch.Generator().manual_seed(0))
    step(x[:, :-1], x[:, 1:]).backward()
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    egt.attach_adapters()
    egt.merge_adapters(None)
    step(x[:, :-1], x[:, 1:]).backward()  # raises if attaching and merging adapters forced a recompilation


def _reduce_gradients(rank: int, world: int, out: str):
    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    for p in params:
        p.grad = torch.full_like(p, float(rank + 1))  # rank 0 holds ones, rank 1 twos
    eval_ngram.all_reduce_([p.grad for p in params], world, average=True)  # EGT's sleep: each rank's own mean
    averaged = [p.grad.clone() for p in params]
    eval_ngram.all_reduce_([p.grad for p in params], world)  # TTT: each rank's loss is its share of one sum
    torch.save((averaged, [p.grad.clone() for p in params]), f"{out}{rank}.pt")


def test_sleep_and_ttt_share_one_gradient_all_reduce_that_averages_or_sums(tmp_path):
    from distributed import spawn_gloo
    spawn_gloo(_reduce_gradients, 2, tmp_path, str(tmp_path / "rank"))
    for rank in range(2):
        averaged, summed = torch.load(tmp_path / f"rank{rank}.pt")
        assert all(torch.equal(g, torch.full_like(g, 1.5)) for g in averaged)  # (1 + 2) / 2 on every rank
        assert all(torch.equal(g, torch.full_like(g, 3.0)) for g in summed)  # then 1.5 + 1.5
