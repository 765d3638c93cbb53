#!/bin/sh
# Short CartPole-v1 / Pendulum-v1 runs for what the other scripts do not cover: SB3 PPO baselines with the same zoo
# entries, the Gumbel-Softmax policy, RecurrentPPORollback (GRU, LSTM) on the fully observed CartPole, and
# collection="async". One process at a time.
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
C="$PY -m benchmarks.learning --env CartPole-v1 --seeds 0 1 2 --timesteps 100000 --eval-freq 10000"
$C --algo ppo --variant gae
$C --algo ppo_rollback --variant gumbel_softmax --set policy_kwargs.action_distribution=gumbel_softmax
$C --algo ppo_rollback --variant async --set collection=async
$C --algo recurrent_ppo_rollback --variant gru
$C --algo recurrent_ppo_rollback --variant lstm --set policy=MlpLstmPolicy
$C --algo recurrent_ppo_rollback --variant gru_n_step8 --set returns_estimator=n_step --set n_step=8
# the opt-in whole-sequence recurrent pass (policy_kwargs whole_sequences=True; weight gradients equal up to rounding)
$C --algo recurrent_ppo_rollback --variant gru_whole_sequences --set policy_kwargs.whole_sequences=true
$C --algo recurrent_ppo_rollback --variant lstm_whole_sequences --set policy=MlpLstmPolicy \
  --set policy_kwargs.whole_sequences=true
P="$PY -m benchmarks.learning --env Pendulum-v1 --seeds 0 1 --timesteps 200000 --eval-freq 20000"
$P --algo ppo --variant normal_sde
