# Device call G (2 GPUs, two independent one-GPU jobs; every comparison stays inside one GPU's job):
#  GPU0, issue 6: peer non-record random-adapters script vs our random_bases preset (now MLP frozen on the baseline
#        shape), same 150 s wall-clock and shards (val: first 524,288 tokens); then our artifact, neural model alone.
#  GPU1, issue 7: record vs record + EGT interleaved (a wake/sleep phase every 20 steps), 120 s each.
export PYTHONUNBUFFERED=1
TOK=.devdata/tokenizers/fineweb_1024_bpe.model
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devdata/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi -L
bash .devdata/prep.sh 2>&1 | tail -2
D=/tmp/shards_v512k
job0() {
  python records/bench.py --peer nonrecord_1.1971=.devdata/nonrecord_1.1971_random_adapters_train_gpt.py \
    --ours random_bases=random_bases:records_dir=/tmp/k0 --protocol wall --seconds 150 --data-dir $D --tokenizer $TOK \
    --name issue6_random_bases_v2 --out /tmp/bench0
  ART=$(ls /tmp/k0/*/*/artifact.pgolf | head -1); echo "artifact $ART"
  python eval_ngram.py $ART --no-ngram --ttt-steps 0 --audit 16 2>&1 | tail -n 2
}
job1() {
  python records/bench.py --ours record=record:records_dir=/tmp/k1 \
    --ours record_egt_interleaved=record:egt_mode=interleaved,egt_every=20,records_dir=/tmp/k1e --protocol wall --seconds 120 \
    --data-dir $D --tokenizer $TOK --name issue7_egt_interleaved --out /tmp/bench1
}
CUDA_VISIBLE_DEVICES=0 job0 > $OUT/job0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 job1 > $OUT/job1.log 2>&1 &
wait
tar czf $OUT/bench.tgz -C /tmp bench0 bench1
grep -hE "^(train_done|final|audit|packed|artifact|==|error|egt |random_bases=)|^\|" $OUT/job0.log $OUT/job1.log | cut -c1-300
