#!/bin/sh
# BipedalWalker-v3, 5M steps, evaluation every 250k steps. Goal >= 300 (rl-zoo PPO 213 +- 129 in its benchmark
# table, the cherry_rl seed's PPO with a Beta policy 333). One process; SEEDS="0 1" for more seeds.
#   default                     PPORollback, Beta policy, the zoo entry (the cherry_rl seed's bipedal settings)
#   ALGO=ppo VARIANT=normal     the SB3 PPO baseline: Gaussian policy, same entry minus the rollback
#   VARIANT=beta_rlzoo_config   PPORollback, Beta policy, rl-zoo's PPO BipedalWalker hyperparameters + rollback 0.3
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
ALGO=${ALGO:-ppo_rollback}
VARIANT=${VARIANT:-beta}
case "$VARIANT" in
  beta_rlzoo_config)
    EXTRA="--set policy_kwargs.action_distribution=beta --set n_steps=2048 --set batch_size=64 --set n_epochs=10
      --set clip_range=0.18 --set gamma=0.999 --set gae_lambda=0.95 --set returns_estimator=gae
      --set normalize_advantage=true --set rollback_alpha=0.3" ;;
  *) EXTRA="--set policy_kwargs.action_distribution=$VARIANT" ;;
esac
for seed in $SEEDS; do
  $PY -m benchmarks.learning --env BipedalWalker-v3 --algo $ALGO --variant $VARIANT --eval-freq 250000 --seeds $seed $EXTRA
done
