#!/bin/sh
# Learning curves with the opt-in fused Adam (issue 19: a switch that changes float rounding needs 3-seed curves on
# CartPole, Pendulum and Hopper before it could be a default). Same zoo entries, budgets and evaluation as the rows it
# is compared with (benchmarks/results/<env>.csv): CartPole-v1 "gae" (run_cartpole_estimators.sh), Pendulum-v1
# "normal_sde" (run_pendulum.sh; seed 2 of the reference added here), Hopper-v5 "zoo" (run_mujoco_1m.sh).
# Two processes, one per core:
#   nohup ./benchmarks/run_fused_curves.sh a > /tmp/fused_a.log 2>&1 &
#   nohup ./benchmarks/run_fused_curves.sh b > /tmp/fused_b.log 2>&1 &
set -eux
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
L="$PY -m benchmarks.learning"
case ${1:-a} in
  a)
    $L --env Hopper-v5 --algo ppo_rollback --seeds 0 1 --eval-freq 50000 --variant fused_adam --fused-optimizer
    ;;
  b)
    $L --env CartPole-v1 --algo ppo_rollback --seeds 0 1 2 --timesteps 100000 --eval-freq 10000 --variant fused_adam \
      --fused-optimizer
    $L --env Pendulum-v1 --algo ppo_rollback --seeds 2 --timesteps 200000 --eval-freq 20000 --variant normal_sde
    $L --env Pendulum-v1 --algo ppo_rollback --seeds 0 1 2 --timesteps 200000 --eval-freq 20000 --variant fused_adam \
      --fused-optimizer
    $L --env Hopper-v5 --algo ppo_rollback --seeds 2 --eval-freq 50000 --variant fused_adam --fused-optimizer
    ;;
esac
