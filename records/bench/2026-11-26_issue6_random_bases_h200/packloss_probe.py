# Does packing cost a frozen-bases model more than a fully trained one? Train each preset at 4x128 for 300 steps on
# CPU, score the model in memory and after pack -> unpack. From the repo root: python records/bench/2026-11-26_issue6_random_bases_h200/packloss_probe.py random_bases baseline
import sys, torch
sys.path.insert(0, ".")
import train_gpt as tg, eval_ngram as e
for preset in sys.argv[1:]:
    cfg, _ = tg.resolve_config(preset, ["data_dir=data/local/corpus_sp1024", "tokenizer=../shared/data/tokenizers/fineweb_1024_bpe.model",
        "num_layers=4", "model_dim=128", "num_heads=4", "num_kv_heads=2", "seq_len=128", "train_batch_tokens=8192",
        "grad_accum_steps=1", "iterations=300", "max_wallclock_seconds=0", "compile=off", "ngram_order=0", "ttt_steps=0"])
    torch.manual_seed(0)
    model = tg.GPT(cfg)
    facts = tg.train(cfg, model, tg.TrainStream(cfg.data_dir, cfg.vocab_size), lambda s: None, 0, 1, torch.device("cpu"))
    val, tables = e.load_val_tokens(cfg.data_dir)[:32768], e.byte_tables(cfg.tokenizer, 1024)
    model.eval()
    before = e.score(model, val, tables, seq_len=128, stride=64)["val_bpb"]
    state, meta, _ = e.unpack_artifact(tg.pack_model(model, cfg, facts))
    after = e.score(tg.model_from_artifact(state, meta).eval(), val, tables, seq_len=128, stride=64)["val_bpb"]
    print(preset, "in memory", round(before, 4), "unpacked", round(after, 4), flush=True)
