# Device call K (2 GPUs, two independent one-GPU jobs; every comparison stays inside one GPU's job):
#  GPU0, issue 7 (90 s per row): record vs record + EGT (adapters now only during sleep), interleaved (egt_every=40) and final.
#  GPU1, issue 6 (200 s per row): peer random-adapters script vs our random_bases preset, then its artifact neural alone.
export PYTHONUNBUFFERED=1
TOK=.devdata/tokenizers/fineweb_1024_bpe.model
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devdata/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi -L
SECONDS=0; bash .devdata/prep.sh 2>&1 | tail -2; echo "prep_s=$SECONDS"
D=/tmp/shards_v512k
B="--data-dir $D --tokenizer $TOK --protocol wall"
job0() {
  python records/bench.py --ours record=record:records_dir=/tmp/k0 \
    --ours record_egt_interleaved=record:egt_mode=interleaved,egt_every=40,records_dir=/tmp/k0i \
    --ours record_egt_final=record:egt_mode=final,records_dir=/tmp/k0f $B --seconds 90 --name issue7_egt_sleep_only_adapters --out /tmp/bench0
}
job1() {
  python records/bench.py --peer nonrecord_1.1971=.devdata/nonrecord_1.1971_random_adapters_train_gpt.py \
    --ours random_bases=random_bases:records_dir=/tmp/k1 $B --seconds 200 --name issue6_rb_200s --out /tmp/bench1
  ART=$(ls /tmp/k1/*/*/artifact.pgolf | head -1); echo "artifact $ART"
  python eval_ngram.py $ART --no-ngram --ttt-steps 0 --audit 16 2>&1 | tail -n 2
}
CUDA_VISIBLE_DEVICES=0 job0 > $OUT/job0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 job1 > $OUT/job1.log 2>&1 &
wait
echo "total_s=$SECONDS"
tar czf $OUT/bench.tgz -C /tmp bench0 bench1
grep -hE "^(train_done|final|audit|packed|error|egt |warmup compile)|^\| [a-z]|sliding val_bpb" $OUT/job0.log $OUT/job1.log | grep -v "^| row" | cut -c1-240
