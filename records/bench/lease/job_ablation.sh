#!/usr/bin/env bash
# Issue 15's ablation table at 140 s, one part per lease (each part with its own `record` control, so a row compares
# with the control of its own card): every switch the issue added, off, from today's `record`. Eighth protocol, seed
# 1337, ordered-tail proxy shards, first 524,288 val tokens, --overlap (a row compiles while the one before scores; its
# clock waits for that row's end). Part 1 then scores its control's artifact on the held-out tail with and without
# the n-gram mixer (orders 7 and 9) and TTT (records/tune_mix.py; val never opened). Part 3 joins the 140 s table:
#     bash .devdata/lease_start.sh "job_ablation.sh 1" 560     then, in the same block of calls: bash .devdata/lease_wait.sh 585 (x2)
#     bash .devdata/lease_start.sh "job_table.sh 140 --ours mom99=record:muon_momentum=0.99" 560
# (Muon weight decay 0.09 and the 72% warm-down have A/Bs of their own: ../2026-12-02_screen140s_v3/, ../2026-12-02_warmdown300s/.)
# Part recur600: `record` against no recurrence at 600 s, the length `record` is chosen for (1,403 s of calls; the band
# paid 0.0049 there, ../2026-12-03_ablation600s_partrecur600/); part recur300 (`record`, no recurrence and the band
# from 70% at 300 s, ~1,100 s) would place the turn between part 1's 140 s and 600 s.
# Part 4 turns on the switches `record` leaves off (a shorter sequence for the first 30%, an LR floor, untied MLPs for
# the recurrence, QAT from 85%; then per-document TTT and a longer scoring window on its control's artifact).
# --prewarm 3: every row's graphs are compiled first, three at a time (~31 GiB each while they compile), so rows of new
# shapes no longer compile one after the other (~100 s each, of which only the row before's ~40 s of scoring was
# hidden); rows that change no compiled graph come after the first three and compile from the cache in seconds.
# Switches with an earlier A/B of their own are not repeated here: MLP 3.25x (recipe300s), training order
# (eighth300s_h200), GPTQ and the SDClip grid (quant_real_weights_cpu), partial RoPE and the rest of record_v1.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
part=$1 seconds=140 evals=()  # unless a part says otherwise: 140 s rows, no evaluations after them
case $part in
  1) rows=(--ours "record=record:records_dir=/tmp/keep" --ours "no_recur=record:recur_layers=" --ours "no_lanes=record:parallel_start=0"
           --ours "xsa_last4=record:xsa_layers=4" --ours "layer0_attn=record:layer0_attention=true" --ours "no_ve=record:value_embed_layers=")
     evals=(--grid ngram_order=7,9 --grid ttt_steps=0,2) evals_s=240 ;;  # the n-gram mixer (and its order) and TTT, each off
  2) rows=(--ours record --ours "heads8_4=record:num_heads=8,num_kv_heads=4" --ours "no_ln_scale=record:ln_scale=false"
           --ours "qk1.5=record:qk_gain_init=1.5" --ours "no_ema=record:ema=false" --ours "quintic=record:muon_ns_coefficients=quintic"
           --ours "no_row_norm=record:muon_row_norm=false") ;;
  4) rows=(--ours "record=record:records_dir=/tmp/keep" --ours "seq1024=record:seq_len_schedule=1024:0.3"
           --ours "untie_mlp=record:recur_untie=mlp" --ours "qat85=record:qat_start=0.85" --ours "floor10=record:lr_floor=0.1")
     evals=(--grid ttt_doc_chunk=0,256 --grid eval_seq_len=2048,4096 --grid ttt_steps=2) evals_s=300 ;;  # per-document TTT, a longer window (2048: the training length)
  recur300) seconds=300  # part 1's no_recur won at 140 s; `record` is chosen for 600 s, so the band is weighed at 300 s
     rows=(--ours record --ours "no_recur=record:recur_layers=" --ours "recur70=record:recur_start=0.7") ;;
  recur600) seconds=600  # the real run's length (8 GPUs x 600 s = this protocol at 600 s): the band has 300 s to pay back
     rows=(--ours record --ours "no_recur=record:recur_layers=") ;;
  *) echo "usage: job_ablation.sh 1|2|4|recur300|recur600 (part 3: job_table.sh 140 with its extra rows, see above)"; exit 2 ;;
esac
bash .devdata/prep_ordered.sh
T=.devdata/tokenizers/fineweb_1024_bpe.model
mkdir -p /tmp/jobout
python records/bench.py --overlap --prewarm 3 "${rows[@]}" --protocol eighth --seconds $seconds --val-tokens 524288 \
    --data-dir /tmp/shards_ordered --tokenizer $T --out /tmp/jobout --name "ablation${seconds}s_part$part" --row-timeout 900
if [ ${#evals[@]} -gt 0 ]; then  # the control's artifact on the held-out tail (records/tune_mix.py; val never opened)
    A=$(find /tmp/keep -name artifact.pgolf | head -1)
    timeout $evals_s python records/tune_mix.py $A --data-dir /tmp/shards_ordered --tokenizer $T --holdout-tokens 262144 \
        "${evals[@]}" --grid gate_bias=-7 --out /tmp/jobout/evals_part$part > /tmp/jobout/evals_part$part.log 2>&1
    tail -12 /tmp/jobout/evals_part$part.log
fi
