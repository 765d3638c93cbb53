#!/bin/sh
# BipedalWalker-v3, 5M steps, evaluation every 250k steps. Goal >= 300 (rl-zoo PPO 213 +- 129 in its benchmark
# table, the cherry_rl seed's PPO with a Beta policy 333). One process; SEEDS="0 1" for more seeds.
#   default                    PPORollback, Beta policy, zoo entry (rl-zoo's PPO hyperparameters + rollback 0.3)
#   VARIANT=beta_seed_config   PPORollback, Beta policy, the cherry_rl seed's bipedal settings: 32 envs x 16 steps,
#                              8 epochs of 4 minibatches, clip 0.1, gamma 0.99, V-trace (lambda 0.9), lr 3e-4,
#                              no advantage normalisation, rollback 0.05 (its PPO default)
#   ALGO=ppo VARIANT=normal    the SB3 PPO baseline: Gaussian policy, zoo entry minus the rollback
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
ALGO=${ALGO:-ppo_rollback}
VARIANT=${VARIANT:-beta}
case "$VARIANT" in
  beta_seed_config)
    EXTRA="--set policy_kwargs.action_distribution=beta --set n_steps=16 --set batch_size=128 --set n_epochs=8
      --set clip_range=0.1 --set gamma=0.99 --set gae_lambda=0.9 --set returns_estimator=vtrace
      --set learning_rate=3e-4 --set normalize_advantage=false --set rollback_alpha=0.05 --set max_grad_norm=0.5" ;;
  *) EXTRA="--set policy_kwargs.action_distribution=$VARIANT" ;;
esac
for seed in $SEEDS; do
  $PY -m benchmarks.learning --env BipedalWalker-v3 --algo $ALGO --variant $VARIANT --eval-freq 250000 --seeds $seed $EXTRA
done
