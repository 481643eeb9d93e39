# Device call H (4 GPUs, one 1-GPU job each, all started together on the same shards, val = first 524,288 tokens):
#  GPU0 record @120 s and GPU1 record + EGT final phase @120 s (issue 7);
#  GPU2 peer non-record random-adapters script @150 s and GPU3 our random_bases preset @150 s (issue 6).
export PYTHONUNBUFFERED=1
TOK=.devdata/tokenizers/fineweb_1024_bpe.model
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devdata/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi -L
bash .devdata/prep.sh 2>&1 | tail -2
D=/tmp/shards_v512k
B="--data-dir $D --tokenizer $TOK --protocol wall"
CUDA_VISIBLE_DEVICES=0 python records/bench.py --ours record=record:records_dir=/tmp/k0 $B --seconds 120 --name issue7_record --out /tmp/b0 > $OUT/gpu0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 python records/bench.py --ours record_egt_final=record:egt_mode=final,records_dir=/tmp/k1 $B --seconds 120 --name issue7_egt_final --out /tmp/b1 > $OUT/gpu1.log 2>&1 &
CUDA_VISIBLE_DEVICES=2 python records/bench.py --peer nonrecord_1.1971=.devdata/nonrecord_1.1971_random_adapters_train_gpt.py $B --seconds 150 --name issue6_peer --out /tmp/b2 > $OUT/gpu2.log 2>&1 &
( CUDA_VISIBLE_DEVICES=3 python records/bench.py --ours random_bases=random_bases:records_dir=/tmp/k3 $B --seconds 150 --name issue6_random_bases --out /tmp/b3
  CUDA_VISIBLE_DEVICES=3 python eval_ngram.py $(ls /tmp/k3/*/*/artifact.pgolf | head -1) --no-ngram --ttt-steps 0 --audit 16 2>&1 | tail -n 2 ) > $OUT/gpu3.log 2>&1 &
wait
tar czf $OUT/bench.tgz -C /tmp b0 b1 b2 b3
grep -hE "^(train_done|final|audit|packed|artifact|error|egt |random_bases=)|^\| [a-z]" $OUT/gpu*.log | grep -v "^| row" | cut -c1-300
