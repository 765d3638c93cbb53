#!/bin/sh
# collection="async" vs "sync": PPORollback (zoo entries), 300k steps, sync and async in turn per seed.
# Uses both cores (main process + learner process): run alone.
# (benchmarks/results/async_HalfCheetah-v5_uncorrected.csv: seed 0 of the same run before the decoupled-PPO correction;
#  async_<env>_biased.*: the run with the weights applied before the advantage normalisation, before issue 15's fix.)
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
$PY -m benchmarks.async_collection --env HalfCheetah-v5 --seeds 0 1 --timesteps 300000 --threshold 1000
$PY -m benchmarks.async_collection --env Hopper-v5 --seeds 0 1 2 --timesteps 300000 --threshold 1000
