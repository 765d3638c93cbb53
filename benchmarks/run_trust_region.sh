#!/bin/sh
# The trust-region study: SB3 PPO, PPO-RB, TR-PPO-RB and Truly PPO on HalfCheetah-v5, Hopper-v5 and Walker2d-v5, 1M
# steps, 3 seeds, all on the base entry of benchmarks/trust_region.yml (why that entry: see its header). Each method
# adds only its own knobs, the Truly PPO authors' MuJoCo defaults (github wangyuhuix/TrulyPPO,
# baselines/ppo2_AdaClip/run.py):
#   ppo       / base       SB3's PPO (clipped surrogate, clip 0.2)
#   pporb     PPO-RB       ratio rollback, alpha 0.3 (cliptype ratio_rollback, slope_rollback -0.3)
#   trppo_rb  TR-PPO-RB    KL trigger delta 0.03, ratio rollback alpha 0.05 (kl_ratiorollback)
#   truly_ppo Truly PPO    KL trigger delta 0.03, KL rollback alpha 5 (kl_klrollback_constant_withratio)
#
# Resumable per (env, method, seed), across sessions: a run trains in chunks of CHUNK steps (default 100k, one process
# each) into benchmarks/results/trust_region/partial/, with a run checkpoint in benchmarks/checkpoints/trust_region/
# after every chunk (sb3_cherry.common.checkpoint: exact continuation); commit both folders before a session ends and
# the next session's rerun continues the interrupted run where it stopped. Once a run is finished,
# its rows are appended to benchmarks/results/trust_region/<env>.csv, the curves (<env>.png), summary.csv and the
# table summary.md (final return, AUC, steps to the paper's Table 1 thresholds) are regenerated, and that folder is
# committed (git commit of benchmarks/results/trust_region only);
# a (env, method, seed) whose rows are already in the CSV is skipped, so rerunning the script continues the study.
# Every run trains from a snapshot of the committed code (git archive HEAD) so that edits in the worktree never leak
# into a running study. Order: the most informative comparisons first (Hopper seed 0: SB3 PPO vs Truly PPO, ...).
#
#   nohup nice -n 10 ./benchmarks/run_trust_region.sh > /tmp/trust_region_study.log 2>&1 &
#   ONLY="Hopper-v5:truly_ppo:0" ./benchmarks/run_trust_region.sh     # one run (env:method:seed, space-separated)
#   COMMIT=0 ...                                                       # do not commit the CSVs
set -eu
export OMP_NUM_THREADS=1
WT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$WT/.venv/bin/python}
OUT=$WT/benchmarks/results/trust_region
COMMIT=${COMMIT:-1}
CHUNK=${CHUNK:-100000}
CKPT=$WT/benchmarks/checkpoints/trust_region
mkdir -p "$OUT/partial" "$CKPT"

method_args() {
  case $1 in
    ppo) echo "--algo ppo --variant base" ;;
    pporb) echo "--algo ppo_rollback --variant pporb --set rollback_alpha=0.3" ;;
    trppo_rb) echo "--algo ppo_rollback --variant trppo_rb --set trust_region=kl --set kl_threshold=0.03 --set rollback_alpha=0.05" ;;
    truly_ppo) echo "--algo ppo_rollback --variant truly_ppo --set trust_region=kl --set kl_threshold=0.03 --set rollback=kl --set rollback_alpha=5" ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

variant_of() { case $1 in ppo) echo base ;; *) echo "$1" ;; esac; }

done_already() {  # env method seed: the final evaluation (1M steps) of this run is in the CSV
  [ -f "$OUT/$1.csv" ] && awk -F, -v v="$(variant_of "$2")" -v s="$3" \
    '$3 == v && $4 == s && $5 >= 1000000 { found = 1 } END { exit !found }' "$OUT/$1.csv"
}

run_one() {  # env method seed
  env=$1 method=$2 seed=$3
  if done_already "$env" "$method" "$seed"; then echo "skip $env $method $seed (done)"; return; fi
  rev=$(git -C "$WT" rev-parse --short HEAD)
  snap=/tmp/trust_region_snapshots/$rev
  if [ ! -d "$snap" ]; then mkdir -p "$snap" && git -C "$WT" archive HEAD | tar -x -C "$snap"; fi
  partial=$OUT/partial/${env}_${method}_$seed
  algo=$(method_args "$method" | cut -d' ' -f2)
  ckpt=$CKPT/${env}_${algo}_$(variant_of "$method")_$seed  # the folder benchmarks.learning writes
  if [ ! -d "$ckpt" ]; then rm -rf "$partial" && mkdir -p "$partial"; fi  # no checkpoint: a fresh run
  echo "$(date -u +%FT%TZ) start $env $method seed $seed (code $rev)"
  while :; do  # one chunk per process; a checkpoint folder remains until the run reaches its budget
    # shellcheck disable=SC2046
    (cd "$snap" && PYTHONPATH=$snap $PY -m benchmarks.learning --env "$env" --seeds "$seed" --eval-freq 20000 \
      --config "$snap/benchmarks/trust_region.yml" --results "$partial" --checkpoint-dir "$CKPT" \
      --chunk-steps "$CHUNK" $(method_args "$method"))
    [ -d "$ckpt" ] || break
  done
  csv=$partial/$env.csv
  if [ ! -f "$OUT/$env.csv" ]; then head -n 1 "$csv" > "$OUT/$env.csv"; fi
  tail -n +2 "$csv" >> "$OUT/$env.csv"
  rm -rf "$partial"
  echo "$(date -u +%FT%TZ) done $env $method seed $seed"
  # curves, summary.csv and the README's table of the study so far (from the snapshot's code, into the worktree)
  (cd "$snap" && PYTHONPATH=$snap $PY -m benchmarks.plot --results "$OUT" > /dev/null &&
    PYTHONPATH=$snap $PY -m benchmarks.table --trust-region --results "$OUT" > /dev/null) ||
    echo "summary failed (the run's rows are kept)"
  if [ "$COMMIT" = 1 ]; then
    for attempt in 1 2 3 4 5; do
      git -C "$WT" add "$OUT/$env.csv" "$OUT"/*.png "$OUT/summary.csv" "$OUT/summary.md" 2>/dev/null || git -C "$WT" add "$OUT/$env.csv"
      if git -C "$WT" commit -q -m "trust-region study: $env $method seed $seed (1M steps, code $rev)" -- "$OUT"; then
        break
      fi
      sleep 10
    done
  fi
}

if [ -n "${ONLY:-}" ]; then
  for job in $ONLY; do
    IFS=: read -r e m s <<JOB
$job
JOB
    run_one "$e" "$m" "$s"
  done
  exit 0
fi

for seed in 0 1 2; do
  for env in Hopper-v5 HalfCheetah-v5 Walker2d-v5; do
    for method in ppo truly_ppo trppo_rb pporb; do
      run_one "$env" "$method" "$seed"
    done
  done
done
