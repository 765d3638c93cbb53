#!/bin/sh
# Runs added once the first batches proved fast enough: a third seed for the CartPole estimators and for Hopper at 200k,
# then one longer Hopper seed per algorithm (500k steps of the zoo's 1M; variant "zoo_500k"). One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
B="$PY -m benchmarks.learning --env CartPole-v1 --algo ppo_rollback --seeds 2 --timesteps 100000 --eval-freq 10000"
$B --variant gae
$B --variant one_step --set returns_estimator=one_step
$B --variant n_step8 --set returns_estimator=n_step --set n_step=8
$B --variant vtrace --set returns_estimator=vtrace
$B --variant vtrace_recompute --set returns_estimator=vtrace --set recompute_returns=true
H="$PY -m benchmarks.learning --env Hopper-v5 --eval-freq 20000"
$H --seeds 2 --timesteps 200000 --algo ppo
$H --seeds 2 --timesteps 200000 --algo ppo_rollback
$H --seeds 3 --timesteps 500000 --algo ppo --variant zoo_500k
$H --seeds 3 --timesteps 500000 --algo ppo_rollback --variant zoo_500k
