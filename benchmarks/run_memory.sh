#!/bin/sh
# Memory task sb3_cherry/CartPoleNoVel-v0 (velocities hidden): RecurrentPPORollback with a GRU (zoo entry) against a
# feed-forward PPORollback with the same entry minus the recurrent parts. 300k steps, 3 seeds. One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
M="$PY -m benchmarks.learning --env sb3_cherry/CartPoleNoVel-v0 --eval-freq 20000"
for seed in 0 1 2; do
  $M --seeds $seed --algo recurrent_ppo_rollback --variant gru
  $M --seeds $seed --algo ppo_rollback --hyperparams-from recurrent_ppo_rollback --variant feed_forward
done
# the GRU entry with its values / returns recomputed by replaying the rollout before every epoch after the first
for seed in 0 1 2; do
  $M --seeds $seed --algo recurrent_ppo_rollback --variant gru_recompute --set recompute_returns=true
done
# the GRU entry with the opt-in whole-sequence recurrent pass (policy_kwargs whole_sequences=True: one call of the GRU
# per minibatch instead of contrib's loop over time steps; weight gradients equal up to float rounding)
for seed in 0 1 2; do
  $M --seeds $seed --algo recurrent_ppo_rollback --variant gru_whole_sequences --set policy_kwargs.whole_sequences=true
done
