#!/bin/sh
# PPORollback vs SB3 PPO, zoo entry (rl-zoo's PPO hyperparameters, VecNormalize), the entry's full 1M steps, 3 seeds,
# interleaved by seed so that an early stop leaves comparable pairs. ENV=HalfCheetah-v5 for the other env.
# One process per env.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
ENV=${ENV:-Hopper-v5}
B="$PY -m benchmarks.learning --env $ENV --eval-freq 50000"
for seed in 0 1 2; do
  $B --seeds $seed --algo ppo
  $B --seeds $seed --algo ppo_rollback
done
