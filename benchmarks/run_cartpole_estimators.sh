#!/bin/sh
# Returns estimators on CartPole-v1 (PPORollback zoo entry, 100k steps, 3 seeds, eval every 10k). One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
B="$PY -m benchmarks.learning --env CartPole-v1 --algo ppo_rollback --seeds 0 1 2 --timesteps 100000 --eval-freq 10000"
$B --variant gae
$B --variant one_step --set returns_estimator=one_step
$B --variant n_step8 --set returns_estimator=n_step --set n_step=8
$B --variant vtrace --set returns_estimator=vtrace
$B --variant vtrace_recompute --set returns_estimator=vtrace --set recompute_returns=true
