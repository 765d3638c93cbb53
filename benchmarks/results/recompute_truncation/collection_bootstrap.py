"""A/B run: V-trace + ``recompute_returns`` on CartPole-v1 with the truncation re-bootstrap switched off.

Reproduces the code before the fix (the collection-time value of a time-limit truncation kept through every
recompute). Run from the project root: ``OMP_NUM_THREADS=1 PYTHONPATH=. python
benchmarks/results/recompute_truncation/collection_bootstrap.py`` (writes to ``/tmp/ab_results``).
"""

import runpy
import sys

import sb3_cherry.common.buffers as buffers

buffers.ReturnsEstimatorMixin.rebootstraps_truncations = False  # the code before the fix
sys.argv = [
    "benchmarks.learning",
    "--env",
    "CartPole-v1",
    "--algo",
    "ppo_rollback",
    "--seeds",
    "0",
    "1",
    "2",
    "--timesteps",
    "100000",
    "--eval-freq",
    "10000",
    "--variant",
    "vtrace_recompute_collection_bootstrap",
    "--set",
    "returns_estimator=vtrace",
    "--set",
    "recompute_returns=true",
    "--results",
    "/tmp/ab_results",
]
runpy.run_module("benchmarks.learning", run_name="__main__")
