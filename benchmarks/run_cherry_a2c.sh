#!/bin/sh
# CherryA2C (zoo_configs/cherry_a2c.yml = rl-zoo's A2C entries) on CartPole-v1 (500k) and Pendulum-v1 (1M).
# One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
A="$PY -m benchmarks.learning --algo cherry_a2c"
$A --env CartPole-v1 --seeds 0 1 --eval-freq 50000
$A --env Pendulum-v1 --seeds 0 1 2 --eval-freq 100000
