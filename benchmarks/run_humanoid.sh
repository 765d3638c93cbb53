#!/bin/sh
# Humanoid-v5, 10M steps, in resumable chunks of 250k steps (one process per chunk, exact continuation from
# benchmarks/checkpoints/; rerun the script to go on, finished seeds are skipped). Evaluation every 250k steps.
# Goal (issue): >= 5000 at <= 10M steps over >= 2 seeds. SEEDS="0 1" for more seeds.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
CHUNK=${CHUNK:-250000}
for seed in $SEEDS; do
  while [ ! -f "benchmarks/checkpoints/.done_Humanoid-v5_ppo_rollback_zoo_$seed" ]; do
    $PY -m benchmarks.learning --env Humanoid-v5 --algo ppo_rollback --eval-freq 250000 --seeds $seed \
      --checkpoint-dir benchmarks/checkpoints --chunk-steps $CHUNK || exit 1
    [ -d "benchmarks/checkpoints/Humanoid-v5_ppo_rollback_zoo_$seed" ] || touch "benchmarks/checkpoints/.done_Humanoid-v5_ppo_rollback_zoo_$seed"
  done
done
