#!/bin/sh
# BipedalWalker-v3, 5M steps, evaluation every 250k steps, zoo entry (rl-zoo's PPO hyperparameters, VecNormalize,
# Beta policy, rollback_alpha 0.3). Goal >= 300 (rl-zoo PPO 213 +- 129 in its benchmark table, the seed's PPO 333).
# Default: PPORollback with the Beta policy. ALGO=ppo VARIANT=normal: the SB3 PPO baseline (Gaussian policy, same
# entry minus the rollback). SEEDS="0 1" for more seeds. One process.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
ALGO=${ALGO:-ppo_rollback}
VARIANT=${VARIANT:-beta}
for seed in $SEEDS; do
  $PY -m benchmarks.learning --env BipedalWalker-v3 --algo $ALGO --variant $VARIANT --eval-freq 250000 --seeds $seed \
    --set policy_kwargs.action_distribution=$VARIANT
done
