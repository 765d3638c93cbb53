#!/bin/sh
# BipedalWalker-v3: PPORollback with the Beta policy (zoo entry: rl-zoo's PPO hyperparameters + rollback_alpha 0.3),
# 5M steps, evaluation every 250k steps. Goal >= 300 (rl-zoo PPO 288, the seed's PPO 333). One process.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
for seed in $SEEDS; do
  $PY -m benchmarks.learning --env BipedalWalker-v3 --algo ppo_rollback --variant beta --eval-freq 250000 --seeds $seed
done
