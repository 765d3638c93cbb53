#!/bin/sh
# collection="async" vs "sync": PPORollback on Hopper-v5 (zoo entry), 300k steps, 3 seeds, sync and async in turn.
# Uses both cores (main process + learner process): run alone.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
$PY -m benchmarks.async_collection --env Hopper-v5 --seeds 0 1 2 --timesteps 300000 --threshold 1000
$PY -m benchmarks.async_collection --env HalfCheetah-v5 --seeds 0 1 --timesteps 300000 --threshold 1000
