#!/bin/sh
# Pendulum-v1 distributions (PPORollback zoo entry, 200k steps, 2 seeds). One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
P="$PY -m benchmarks.learning --env Pendulum-v1 --algo ppo_rollback --timesteps 200000 --eval-freq 20000"
for seed in 0 1; do
  $P --seeds $seed --variant normal_sde
  $P --seeds $seed --variant beta --set use_sde=false --set policy_kwargs.action_distribution=beta
  $P --seeds $seed --variant tanh_normal --set use_sde=false --set policy_kwargs.action_distribution=tanh_normal
done
$P --seeds 2 --variant normal_sde  # the zoo entry's third seed (added as the reference of run_fused_curves.sh)
