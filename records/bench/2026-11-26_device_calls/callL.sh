# Device call L (2 GPUs, two independent one-GPU jobs; every comparison stays inside one GPU's job), 75 s per row:
#  GPU0: record vs record + EGT interleaved (egt_every=40), all loss terms vs LM + KL only (no critic terms).
#  GPU1: record vs record + EGT final phase, all terms vs no generator steps (the final mode's schedule alone).
export PYTHONUNBUFFERED=1
TOK=.devdata/tokenizers/fineweb_1024_bpe.model
nvidia-smi -L
SECONDS=0; bash .devdata/prep.sh 2>&1 | tail -2; echo "prep_s=$SECONDS"
B="--data-dir /tmp/shards_v512k --tokenizer $TOK --protocol wall --seconds 75"
job0() {
  python records/bench.py --ours record=record:records_dir=/tmp/k0 \
    --ours egt_interleaved=record:egt_mode=interleaved,egt_every=40,records_dir=/tmp/k0i \
    --ours egt_interleaved_lm_kl_only=record:egt_mode=interleaved,egt_every=40,egt_beta_gan=0,egt_lambda_fm=0,records_dir=/tmp/k0j \
    $B --name issue7_interleaved_controls --out /tmp/bench0
}
job1() {
  python records/bench.py --ours record=record:records_dir=/tmp/k1 \
    --ours egt_final=record:egt_mode=final,records_dir=/tmp/k1f \
    --ours egt_final_no_generator_steps=record:egt_mode=final,egt_gen_steps=0,records_dir=/tmp/k1g \
    $B --name issue7_final_controls --out /tmp/bench1
}
CUDA_VISIBLE_DEVICES=0 job0 > $OUT/job0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 job1 > $OUT/job1.log 2>&1 &
wait
echo "total_s=$SECONDS"
tar czf $OUT/bench.tgz -C /tmp bench0 bench1
grep -hE "^(train_done|final|audit|packed|error|egt |warmup compile)|^\| [a-z]" $OUT/job0.log $OUT/job1.log | grep -v "^| row" | cut -c1-240
