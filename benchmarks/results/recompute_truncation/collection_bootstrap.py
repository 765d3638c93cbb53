import runpy, sys
import sb3_cherry.common.buffers as buffers
buffers.ReturnsEstimatorMixin.rebootstraps_truncations = False  # the code before the fix: collection-time values kept
sys.argv = ["benchmarks.learning", "--env", "CartPole-v1", "--algo", "ppo_rollback", "--seeds", "0", "1", "2",
            "--timesteps", "100000", "--eval-freq", "10000", "--variant", "vtrace_recompute_collection_bootstrap",
            "--set", "returns_estimator=vtrace", "--set", "recompute_returns=true", "--results", "/tmp/ab_results"]
runpy.run_module("benchmarks.learning", run_name="__main__")
