"""The training engine and the record recipe's switches: batched Muon (and MuonEq-R), grouped-query attention, rotary
cache, depth recurrence, parallel residual lanes, LN scale, an attention-free first block, value embeddings."""
import pytest
import torch
import torch.nn.functional as F

import eval_ngram
import train_gpt


def tiny(*overrides: str) -> train_gpt.Config:
    return train_gpt.resolve_config("smoke", ["device=cpu", "num_layers=6", "recur_layers=", "parallel_start=0", *overrides])[0]


def test_batched_newton_schulz_equals_one_matrix_at_a_time():
    g = torch.randn(3, 24, 40, generator=torch.Generator().manual_seed(0))
    for coefficients in ("quintic", "polar_express"):
        batched = train_gpt.newton_schulz(g, 5, coefficients)
        single = torch.stack([train_gpt.newton_schulz(m, 5, coefficients) for m in g])
        assert torch.allclose(batched, single, atol=1e-5)


def test_newton_schulz_makes_the_matrix_nearly_orthogonal():
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    for coefficients in ("quintic", "polar_express"):
        s = torch.linalg.svdvals(train_gpt.newton_schulz(g, 5, coefficients))
        assert 0.5 < s.min() and s.max() < 1.3, (coefficients, s.min(), s.max())


def test_muon_row_norm_makes_the_update_blind_to_the_scale_of_each_row():
    for shape in ((2, 24, 40), (2, 40, 24)):  # wide, and tall (transposed inside): rows are the outputs either way
        g = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        scaled = g * torch.logspace(-2, 2, shape[1]).view(1, -1, 1)  # rows from 0.01x to 100x
        equal = [train_gpt.newton_schulz(x, 5, "polar_express", equal_rows=True) for x in (g, scaled)]
        plain = [train_gpt.newton_schulz(x, 5, "polar_express") for x in (g, scaled)]
        assert torch.allclose(*equal, atol=1e-4) and not torch.allclose(*plain, atol=1e-2)
    for on in (True, False):  # the config key reaches Muon
        model = train_gpt.GPT(tiny(f"muon_row_norm={on}"))
        assert train_gpt.build_optimizers(model, model.cfg, 0, 1)[1].equal_rows is on


def test_muon_step_matches_the_unbatched_rule():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 16)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(16, 8))]
    expected = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    muon = train_gpt.Muon(params, lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.01, rank=0, world=1)
    muon.step()
    for p, w in zip(params, expected):
        g = p.grad
        update = train_gpt.newton_schulz(g + 0.9 * g, 5) * max(1.0, p.size(0) / p.size(1)) ** 0.5  # Nesterov, buffer = g
        assert torch.allclose(p.detach(), w * (1 - 0.1 * 0.01) - 0.1 * update, atol=1e-6)


def test_grouped_query_attention_equals_repeated_keys_and_values():
    q, k, v = torch.randn(2, 10, 8, 16), torch.randn(2, 10, 4, 16), torch.randn(2, 10, 4, 16)  # [B, T, H, D]
    out = train_gpt.causal_attention(q, k, v)
    reference = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(2, 2).transpose(1, 2),
                                               v.repeat_interleave(2, 2).transpose(1, 2), is_causal=True).transpose(1, 2)
    assert out.shape == q.shape and torch.allclose(out, reference, atol=1e-5)


def test_rotary_cache_equals_angles_computed_for_a_longer_context():
    rotary = train_gpt.Rotary(16, 0.5, 10000.0, seq_len=8)
    x = torch.randn(1, 12, 2, 16)
    long = rotary(x)  # 12 > 8 positions: computed on the fly
    assert torch.allclose(rotary(x[:, :8]), long[:, :8], atol=1e-6)
    assert torch.equal(long[..., 8:], x[..., 8:])  # partial RoPE: the last dims are not rotated


def test_depth_recurrence_repeats_the_band_right_after_itself_once_switched_on():
    model = train_gpt.GPT(tiny("recur_layers=2,3"))
    assert model.layer_order() == [0, 1, 2, 3, 4, 5]
    model.recurrence_active = True
    assert model.layer_order() == [0, 1, 2, 3, 2, 3, 4, 5]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 1024, (2, 16))
    recurrent = model(x, x)
    model.recurrence_active = False
    assert not torch.allclose(recurrent, model(x, x))


def test_parallel_lanes_with_unit_writes_equal_the_sequential_block():
    """Writing each sublayer's output to both lanes with weight 1 is exactly the sequential residual stream (while
    the embedding mix is the identity: the sequential block mixes the stream itself, a lane only its reads)."""
    torch.manual_seed(0)
    sequential = train_gpt.GPT(tiny())
    parallel = train_gpt.GPT(tiny("parallel_start=3"))
    with torch.no_grad():
        for name, p in sequential.named_parameters():
            p.add_(0 if name.endswith("resid_mix") else 0.05 * torch.randn_like(p))
    parallel.load_state_dict(sequential.state_dict(), strict=False)
    x = torch.randint(0, 1024, (2, 16))
    logits = lambda model: model.forward_logits(x)[0]  # noqa: E731
    assert torch.allclose(logits(sequential), logits(parallel), atol=1e-5)
    with torch.no_grad():
        parallel.blocks[4].lane_writes.copy_(torch.tensor([1.0, 0.0, 0.5, 1.0]))
    assert not torch.allclose(logits(sequential), logits(parallel), atol=1e-3)


def test_flops_per_token_count_the_blocks_as_they_run():
    """MFU's numerator: a block the recurrence repeats counts twice once it is on; an attention-free block has no
    attention FLOPs."""
    model = train_gpt.GPT(tiny("recur_layers=2,3", "layer0_attention=false"))
    seq, dim = model.cfg.seq_len, model.cfg.model_dim
    band = sum(p.numel() for i in (2, 3) for p in model.blocks[i].parameters() if p.ndim == 2)
    off = train_gpt.flops_per_token(model, seq)
    assert off == 6 * train_gpt.matmul_params(model) + 6 * 5 * seq * dim  # 6 blocks, block 0 without attention
    model.recurrence_active = True
    assert train_gpt.flops_per_token(model, seq) - off == 6 * band + 6 * 2 * seq * dim


def perturbed(cfg: train_gpt.Config, seed: int = 0) -> train_gpt.GPT:
    """A model past its zero-initialized projections, so that every weight moves the output."""
    torch.manual_seed(seed)
    model = train_gpt.GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("untie", ["gains", "mlp"])
def test_an_untied_second_pass_starts_as_the_tied_one_and_then_trains_apart(untie):
    tied = perturbed(tiny("recur_layers=2,3"))
    model = perturbed(tiny("recur_layers=2,3", f"recur_untie={untie}"), seed=1)  # second passes: other values
    missing = model.load_state_dict(tied.state_dict(), strict=False).missing_keys
    assert missing and all(".second_pass." in n for n in missing) and {n.split(".")[1] for n in missing} == {"2", "3"}
    assert (model.blocks[2].second_pass.mlp is None) == (untie == "gains")
    ema = [p.detach().clone() + 1 for p in model.parameters()]  # an EMA that differs from the weights
    x = torch.randint(0, 1024, (2, 16))
    model.start_recurrence(ema)
    tied.recurrence_active = True
    assert model.recurrence_active and torch.allclose(model(x, x), tied(x, x), atol=1e-6)  # nothing jumps
    named = dict(zip([n for n, _ in model.named_parameters()], ema))
    assert torch.equal(named["blocks.2.second_pass.mlp_scale"], named["blocks.2.mlp_scale"])  # the EMA's own first pass
    with torch.no_grad():
        model.blocks[3].second_pass.mlp_scale.mul_(2)
    assert not torch.allclose(model(x, x), tied(x, x), atol=1e-3)  # the second pass has its own
    model.recurrence_active = tied.recurrence_active = False
    assert torch.allclose(model(x, x), tied(x, x), atol=1e-6)  # ... which the first pass never reads


def test_untying_the_second_pass_adds_parameters_but_no_flops():
    tied, untied = (train_gpt.GPT(tiny("recur_layers=2,3", f"recur_untie={u}")) for u in ("off", "mlp"))
    mlp = sum(p.numel() for p in tied.blocks[2].mlp.parameters())
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 2 * mlp + 2 * (
        2 * tied.cfg.model_dim + 2)  # per band block: an MLP, two scales, a residual mix
    for active in (False, True):
        tied.recurrence_active = untied.recurrence_active = active
        assert train_gpt.flops_per_token(untied, 64) == train_gpt.flops_per_token(tied, 64)
    with pytest.raises(train_gpt.ConfigError, match="recur_untie='mlp' recur_layers='': needs blocks for depth"):
        tiny("recur_untie=mlp")  # nothing to untie: an error, not a silent no-op


def test_the_training_loop_starts_the_recurrence_once_with_the_ema(sp1024_shards, monkeypatch):
    cfg = tiny("recur_layers=2,3", "recur_untie=mlp", "recur_start=0.5", "iterations=4", "max_wallclock_seconds=0",
               f"data_dir={sp1024_shards}", "train_batch_tokens=256", "seq_len=32", "eval_stride=16", "warmup_steps=1",
               "gptq_tokens=0")
    calls = []
    start = train_gpt.GPT.start_recurrence
    monkeypatch.setattr(train_gpt.GPT, "start_recurrence", lambda self, ema=(): calls.append(len(list(ema))) or start(self, ema))
    model = train_gpt.GPT(cfg)
    stream = eval_ngram.TrainStream.for_config(cfg, holdout_tokens=0)
    train_gpt.train(cfg, model, stream, lambda line: None, 0, 1, torch.device("cpu"))
    assert calls == [len(list(model.parameters()))] and model.recurrence_active  # once, with the EMA


def test_ln_scale_and_attention_free_first_block():
    model = train_gpt.GPT(tiny("ln_scale=true", "layer0_attention=false"))
    assert model.blocks[0].attn is None and model.blocks[1].attn is not None
    assert [b.norm_scale for b in model.blocks[:3]] == [1.0, 2 ** -0.5, 3 ** -0.5]
    x = torch.randint(0, 1024, (2, 16))
    assert torch.isfinite(model(x, x))


def test_an_artifact_is_rebuilt_with_the_recurrence_as_training_left_it():
    model = train_gpt.GPT(tiny("recur_layers=2,3"))
    for active in (False, True):
        model.recurrence_active = active
        blob = train_gpt.pack_model(model, model.cfg, {"train_time_s": 1.0})
        state, meta, _ = eval_ngram.unpack_artifact(blob)
        assert train_gpt.model_from_artifact(state, meta).recurrence_active is active


def test_value_embeddings_start_as_a_no_op_and_then_add_the_tokens_own_vector_to_the_chosen_blocks_values():
    torch.manual_seed(0)
    plain = train_gpt.GPT(tiny("value_embed_layers="))
    with torch.no_grad():  # past the zero-initialized output projections, so that values matter
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = train_gpt.GPT(tiny("value_embed_layers=2,4", "value_embed_dim=16"))
    assert model.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        "value_embed_scales", "value_embed.table.weight", "value_embed.proj.weight"]
    x = torch.randint(0, 1024, (2, 16))
    assert torch.equal(model.forward_logits(x)[0], plain.forward_logits(x)[0])  # zero projection: nothing changes
    seen = {}  # block -> the value embedding its attention was given
    for i, block in enumerate(model.blocks[1:], start=1):  # block 0 has no attention in this preset
        block.attn.register_forward_pre_hook(lambda module, args, i=i: seen.__setitem__(i, args[1]))
    with torch.no_grad():
        model.value_embed.proj.weight.normal_()
        model.value_embed_scales.copy_(torch.tensor([1.0, 2.0]))
    assert not torch.equal(model.forward_logits(x)[0], plain.forward_logits(x)[0])
    assert [i for i, ve in seen.items() if ve is not None] == [2, 4] and torch.equal(seen[4], 2 * seen[2])
    assert torch.equal(seen[2], model.value_embed.proj(model.value_embed.table(x)))
    adam, muon = train_gpt.build_optimizers(model, model.cfg, 0, 1)
    in_adam = {id(p) for g in adam.param_groups for p in g["params"]}
    assert {id(model.value_embed.table.weight), id(model.value_embed_scales)} <= in_adam
    assert id(model.value_embed.proj.weight) in {id(p) for g in muon.param_groups for p in g["params"]}


def test_an_artifact_carries_the_value_embeddings_with_the_table_at_embedding_bits():
    model = train_gpt.GPT(tiny("value_embed_layers=3", "embed_quant_bits=7"))
    assert train_gpt.quant_plan(model, model.cfg)["value_embed.table.weight"] == 7  # 1024 x 128: a lookup table
    state, meta, _ = eval_ngram.unpack_artifact(train_gpt.pack_model(model, model.cfg, {"train_time_s": 1.0}))
    rebuilt = train_gpt.model_from_artifact(state, meta)
    assert rebuilt.value_embed_slots == {3: 0} and set(rebuilt.state_dict()) == set(model.state_dict())


def test_value_embeddings_go_only_where_there_is_attention():
    for layers in ("0", "6", "1,x", "2,2"):
        with pytest.raises(train_gpt.ConfigError, match="value_embed_layers"):
            tiny(f"value_embed_layers={layers}", "layer0_attention=false")
    assert tiny("value_embed_layers=0", "layer0_attention=true").value_embed_layers == "0"


def test_every_skip_weight_row_is_used_once_the_recurrence_runs():
    model = train_gpt.GPT(tiny("num_layers=7", "recur_layers=2,3"))  # 9 block runs with the recurrence: 4 skips
    model.recurrence_active = True
    x = torch.randint(0, 1024, (2, 16))
    model(x, x).backward()
    assert model.skip_weights.shape[0] == 4 and bool((model.skip_weights.grad.abs().sum(1) > 0).all())


def test_gains_train_with_adamw_without_decay_and_only_matrices_with_muon():
    """Muon orthogonalizes an update and decays the weight: right for a block matrix, wrong for gains such as the
    lane writes. The U-Net skip weights ([skips, width], 2-D but a gain per channel) go to Muon by default (it won
    the 140 s A/B) and to AdamW without decay with skip_weights_muon=false. Every trained parameter is in exactly
    one group."""
    for skip_muon in (True, False):
        model = train_gpt.GPT(tiny("parallel_start=3", f"skip_weights_muon={skip_muon}"))
        adam, muon = train_gpt.build_optimizers(model, model.cfg, 0, 1)
        gains = {id(p) for g in adam.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
        in_muon = [id(p) for g in muon.param_groups for p in g["params"]]
        lane = {id(b.lane_writes) for b in model.blocks if b.lane_writes is not None}
        assert len(lane) == 3 and lane <= gains and model.skip_weights.ndim == 2
        assert (id(model.skip_weights) in in_muon) == skip_muon and (id(model.skip_weights) in gains) != skip_muon
        block_matrices = {id(p) for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim == 2
                          and not train_gpt.is_embedding(n)}
        assert set(in_muon) == block_matrices | ({id(model.skip_weights)} if skip_muon else set())
        grouped = in_muon + [id(p) for g in adam.param_groups for p in g["params"]]
        assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_warm_down_ends_at_the_lr_floor():
    for floor in (0.0, 0.1):
        cfg = tiny(f"lr_floor={floor}", "warmup_steps=0", "warmdown_frac=0.5")
        assert train_gpt.lr_multiplier(0, 0.25, cfg) == 1.0  # flat before warm-down
        assert abs(train_gpt.lr_multiplier(0, 0.75, cfg) - (floor + (1 - floor) * 0.5)) < 1e-12
        assert abs(train_gpt.lr_multiplier(0, 1.0, cfg) - floor) < 1e-12


class RecordingStream:
    """Random batches; remembers each batch's sequence length and whether the model ran recurrently."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def next_batch(self, tokens, seq_len, rank, world, device):
        self.seen.append((seq_len, self.model.recurrence_active))
        x = torch.randint(0, 1024, (tokens // seq_len, seq_len + 1))
        return x[:, :-1], x[:, 1:]

    def state(self):
        return {}

    def restore(self, state):
        pass


def test_sequence_length_schedule_and_a_warm_up_that_visits_every_graph_training_runs():
    cfg = tiny("seq_len_schedule=32:0.2,64:0.5", "recur_layers=2,3", "recur_start=0.6", "compile=off")
    model = train_gpt.GPT(cfg)
    stream = RecordingStream(model)
    trainer = train_gpt.Trainer(cfg, model, stream, 0, 1, torch.device("cpu"))
    trainer.warm_up(6, lambda line: None)
    assert sorted(set(stream.seen)) == [(32, False), (64, False), (128, False), (128, True)]
    assert model.recurrence_active is False  # and everything put back
    stream.seen.clear()
    for step, progress in enumerate((0.0, 0.19, 0.2, 0.49, 0.5, 0.99)):
        trainer.step(step, progress)
    assert [n for n, _ in stream.seen] == [32, 32, 64, 64, 128, 128]
