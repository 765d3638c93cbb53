#!/bin/sh
# BipedalWalker-v3, 5M steps, evaluation every 250k steps, in resumable chunks of 1M steps (exact continuation from
# benchmarks/checkpoints/; rerun the script to go on, finished seeds are skipped). The final run checkpoint is kept
# (--keep-final) for the 1000-episode evaluation and the GIF:
#   sb3-cherry evaluate --env BipedalWalker-v3 --model benchmarks/checkpoints/BipedalWalker-v3_ppo_rollback_zoo_<seed> -n 1000
# Goal (issue 20): >= 320 mean over 3 seeds at <= 5M (the cherry_rl seed's PPO with a Beta policy: 333).
# SEEDS="0 1 2" for the three seeds (one process each, in turn; run one script per core for parallel seeds).
#   default                     PPORollback, the zoo entry (Beta policy, entropy bonus decaying to 0 over 1.5M steps)
#   VARIANT=beta                the entry with ent_coef 0 (the earlier runs: seed 0 stalls at ~160)
#   ALGO=ppo VARIANT=normal     the SB3 PPO baseline: Gaussian policy, same entry minus the rollback, ent_coef 0
#   VARIANT=beta_rlzoo_config   PPORollback, Beta policy, rl-zoo's PPO BipedalWalker hyperparameters + rollback 0.3
set -x
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
ALGO=${ALGO:-ppo_rollback}
VARIANT=${VARIANT:-zoo}
CHUNK=${CHUNK:-1000000}
case "$VARIANT" in
  zoo) EXTRA="" ;;
  beta_rlzoo_config)
    EXTRA="--set policy_kwargs.action_distribution=beta --set n_steps=2048 --set batch_size=64 --set n_epochs=10
      --set clip_range=0.18 --set gamma=0.999 --set gae_lambda=0.95 --set returns_estimator=gae
      --set normalize_advantage=true --set rollback_alpha=0.3 --set ent_coef=0.0" ;;
  *) EXTRA="--set policy_kwargs.action_distribution=$VARIANT --set ent_coef=0.0" ;;
esac
for seed in $SEEDS; do
  done_file="benchmarks/checkpoints/.done_BipedalWalker-v3_${ALGO}_${VARIANT}_$seed"
  while [ ! -f "$done_file" ]; do
    $PY -m benchmarks.learning --env BipedalWalker-v3 --algo $ALGO --variant $VARIANT --eval-freq 250000 --seeds $seed \
      --checkpoint-dir benchmarks/checkpoints --chunk-steps $CHUNK --keep-final $EXTRA || exit 1
    # finished when the CSV holds the row at the full budget (the kept checkpoint is then the final model)
    $PY - "$ALGO" "$VARIANT" "$seed" <<'EOF' && touch "$done_file"
import sys
from benchmarks.learning import csv_path, finished
algo, variant, seed = sys.argv[1:]
row = dict(env="BipedalWalker-v3", algo=algo, variant=variant, seed=seed)
sys.exit(0 if finished(csv_path("BipedalWalker-v3"), row, 5_000_000) else 1)
EOF
  done
done
