# Device-side, after prep.sh made /tmp/shards (sp1024): the same corpus as sp8192 shards, then both validation sets
# cut to the same whole documents (those inside sp1024's first 524,288 val tokens), so the two bpb compare.
set -e
if [ ! -f /tmp/shards_sp8192/export.json ]; then
  python data/export.py .devdata/corpus/enwiki_train.txt.xz .devdata/corpus/imdb_train.txt.xz \
    --val-files .devdata/corpus/enwiki_val.txt.xz .devdata/corpus/imdb_val.txt.xz \
    --tokenizer .devdata/tokenizers/fineweb_8192_bpe.model --out /tmp/shards_sp8192 2>&1 | tail -1
fi
python - <<'PY'
import glob, os
import eval_ngram as e
val = {v: e.load_val_tokens(src) for v, src in ((1024, "/tmp/shards"), (8192, "/tmp/shards_sp8192"))}
starts = {v: (t == 1).nonzero().flatten() for v, t in val.items()}  # BOS = 1 in both models
assert len(starts[1024]) == len(starts[8192]), "the two exports hold different documents"
docs = int((starts[1024] < 524288).sum()) - 1  # whole documents within sp1024's first 524,288 tokens
for v, src in ((1024, "/tmp/shards"), (8192, "/tmp/shards_sp8192")):
    out = f"/tmp/sp{v}_vdocs"
    os.makedirs(out, exist_ok=True)
    for path in glob.glob(f"{src}/fineweb_train_*.bin"):
        if not os.path.lexists(os.path.join(out, os.path.basename(path))):
            os.symlink(path, os.path.join(out, os.path.basename(path)))
    tokens = val[v][:int(starts[v][docs])].long()
    e.write_shard(f"{out}/fineweb_val_000000.bin", tokens.numpy())
    counted = int(e.target_bytes(tokens[:-1], tokens[1:], e.byte_tables(f".devdata/tokenizers/fineweb_{v}_bpe.model", v)).sum())
    print(f"sp{v}: {docs} val documents, {tokens.numel()} tokens, {counted} bytes counted -> {out}")
PY
