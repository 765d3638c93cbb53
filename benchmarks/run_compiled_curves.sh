#!/bin/sh
# Learning curves with the opt-in compiled update (compile_update=True, issue 19: a switch that changes float rounding
# needs 3-seed curves on CartPole, Pendulum and Hopper before it could be a default). Same zoo entries, budgets and
# evaluation as the rows it is compared with (benchmarks/results/<env>.csv): CartPole-v1 "gae"
# (run_cartpole_estimators.sh), Pendulum-v1 "normal_sde" (run_pendulum.sh), Hopper-v5 "zoo" (run_mujoco_1m.sh).
# One process (Hopper in resumable chunks of 250k steps: rerun the script to continue; finished runs are skipped):
#   nohup nice -n 10 ./benchmarks/run_compiled_curves.sh > /tmp/compiled_curves.log 2>&1 &
set -eux
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
L="$PY -m benchmarks.learning"
$L --env CartPole-v1 --algo ppo_rollback --seeds 0 1 2 --timesteps 100000 --eval-freq 10000 --variant compiled \
  --set compile_update=true
$L --env Pendulum-v1 --algo ppo_rollback --seeds 0 1 2 --timesteps 200000 --eval-freq 20000 --variant compiled \
  --set compile_update=true
# each call trains one 250k-step chunk of every unfinished seed: four calls finish the 1M-step runs
for chunk in 1 2 3 4; do
  $L --env Hopper-v5 --algo ppo_rollback --seeds 0 1 2 --eval-freq 50000 --variant compiled --set compile_update=true \
    --checkpoint-dir benchmarks/checkpoints/compiled_curves --chunk-steps 250000
done
