"""PPORollback's opt-in compiled update (``compile_update=True``, issue 19): torch.compile of the minibatch loss."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_cherry import PPORollback

SMALL = dict(n_steps=64, batch_size=32, n_epochs=3, seed=3, device="cpu", policy_kwargs=dict(net_arch=[16, 16]))


def _parameters(model) -> list[th.Tensor]:
    return [p.detach().clone() for p in model.policy.parameters()]


def _gap(a: list[th.Tensor], b: list[th.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _assert_close(a: list[th.Tensor], b: list[th.Tensor], tol: float) -> None:
    assert _gap(a, b) < tol, _gap(a, b)


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("CartPole-v1", dict(n_envs=2, clip_range_vf=0.2)),
        ("Pendulum-v1", dict(n_envs=2, ent_coef=0.01)),
    ],
)
def test_compiled_update_trains_like_sb3_ppo(env_id, kwargs):
    """rollback_alpha=0 compiled: SB3's PPO parameters after two rollouts and updates, to float rounding."""
    from stable_baselines3.common.env_util import make_vec_env

    kwargs = dict(kwargs)
    n_envs = kwargs.pop("n_envs")
    settings = {**SMALL, **kwargs}
    reference = PPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), **settings)
    start = _parameters(reference)
    reference.learn(2 * 64 * n_envs)
    model = PPORollback(
        "MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), rollback_alpha=0.0, compile_update=True, **settings
    )
    model.learn(2 * 64 * n_envs)
    assert _gap(start, _parameters(reference)) > 1e-3  # the updates did something
    _assert_close(_parameters(model), _parameters(reference), 1e-5)
    assert model.logger.name_to_value["train/clip_fraction"] == pytest.approx(
        reference.logger.name_to_value["train/clip_fraction"]
    )


def test_compiled_rollback_beta_and_schedules_train_like_the_eager_update():
    """The rollback surrogate (alpha > 0), a Beta head, V-trace and scheduled coefficients: the eager update's
    parameters (itself tested against SB3's and the Truly PPO authors' loss) to float rounding, with no recompilation
    when the schedules change the coefficients between updates."""
    import torch._dynamo.utils as dynamo_utils
    from stable_baselines3.common.env_util import make_vec_env

    settings = dict(
        SMALL,
        rollback_alpha=0.3,
        returns_estimator="vtrace",
        clip_range=lambda progress: 0.1 + 0.1 * progress,
        clip_range_vf=lambda progress: 0.5 * progress + 0.1,
        ent_coef={"start": 0.01, "end": 0.0, "end_fraction": 1.0},
        # SGD: the parameters move by the gradients (Adam's normalised step turns float noise in a near-zero gradient
        # into a step of up to the learning rate; Pendulum's unnormalised returns make large value gradients)
        policy_kwargs=dict(net_arch=[16, 16], action_distribution="beta", optimizer_class=th.optim.SGD),
        learning_rate=1e-3,
    )
    runs = []  # parameters after one and after four rollouts, eager then compiled
    for compiled in (False, True):
        # one model at a time: each draws its actions from the global RNG its constructor seeded
        model = PPORollback("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), compile_update=compiled, **settings)
        start = _parameters(model)
        model.learn(64 * 2)
        first = _parameters(model)
        graphs = dynamo_utils.counters["stats"]["unique_graphs"]
        model.learn(3 * 64 * 2, reset_num_timesteps=False)
        if compiled:
            assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs  # the same graphs for every update
        runs.append((first, _parameters(model), dict(model.logger.name_to_value)))
    (eager_first, eager_last, eager_log), (compiled_first, compiled_last, compiled_log) = runs
    moved = _gap(start, eager_last)
    assert moved > 1e-3
    _assert_close(compiled_first, eager_first, 1e-6 * moved)
    _assert_close(compiled_last, eager_last, 1e-5 * moved)
    for key in ("train/loss", "train/value_loss", "train/rollback_fraction", "train/entropy_loss"):
        assert np.isclose(compiled_log[key], eager_log[key], rtol=1e-4, atol=1e-6), key


def test_compile_update_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(ValueError, match=r"trust_region='kl'.*compile_update=False"):
        PPORollback("MlpPolicy", "CartPole-v1", trust_region="kl", compile_update=True)
    with pytest.raises(ValueError, match=r"collection='async'.*compile_update=False"):
        PPORollback("MlpPolicy", "CartPole-v1", collection="async", compile_update=True)
    with pytest.raises(ValueError, match="compile_update='yes' must be True or False"):
        PPORollback("MlpPolicy", "CartPole-v1", compile_update="yes")
    model = PPORollback("MlpPolicy", "CartPole-v1", compile_update=True, n_steps=32, batch_size=32)
    model.save(tmp_path / "m.zip")
    assert PPORollback.load(tmp_path / "m.zip").compile_update is True
    assert PPORollback("MlpPolicy", "CartPole-v1").compile_update is False


@pytest.mark.parametrize(
    "env_id, policy, kwargs",
    [
        ("sb3_cherry/DictReach-v0", "MultiInputPolicy", {}),  # Dict observations
        ("sb3_cherry/HybridGoal-v0", "MlpPolicy", {}),  # Tuple actions (Discrete + Beta parts)
        ("CartPole-v1", "MlpPolicy", dict(batch_size=48, target_kl=0.01)),  # a shorter last minibatch, early stop
    ],
)
@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
def test_compiled_update_on_other_spaces_trains_like_the_eager_update(env_id, policy, kwargs):
    from stable_baselines3.common.env_util import make_vec_env

    import sb3_cherry.envs  # noqa: F401  (registers the envs)

    settings = {**SMALL, "n_epochs": 2, "policy_kwargs": {}, **kwargs}
    runs = []
    for compiled in (False, True):
        model = PPORollback(policy, make_vec_env(env_id, n_envs=2, seed=0), compile_update=compiled, **settings)
        start = _parameters(model)
        model.learn(2 * 64 * 2)
        runs.append(_parameters(model))
    assert _gap(start, runs[0]) > 1e-4
    _assert_close(runs[1], runs[0], 1e-5)


def test_a_sweep_keeps_compiling_and_kl_trials_run_eagerly():
    """Up to RECOMPILE_LIMIT versions during an update (torch's default 8 is reached by a sweep of architectures and
    minibatch sizes, after which torch runs the loss uncompiled); an optuna KL trial over an entry with
    compile_update turns it off instead of stopping the study."""
    import optuna
    import torch._dynamo.config as dynamo_config

    from sb3_cherry import RecurrentPPORollback
    from sb3_cherry.common.hyperparams_opt import SAMPLERS, convert_ppo_rollback_params, sample_ppo_rollback_params
    from sb3_cherry.common.speed import RECOMPILE_LIMIT, compiled_versions

    default = dynamo_config.recompile_limit
    with compiled_versions():
        assert dynamo_config.recompile_limit == max(RECOMPILE_LIMIT, default) >= 64
    with compiled_versions(False):
        assert dynamo_config.recompile_limit == default
    assert dynamo_config.recompile_limit == default

    fixed = {
        "batch_size_pow": 5, "n_steps_pow": 6, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
        "learning_rate": 3e-4, "ent_coef": 1e-6, "clip_range": 0.2, "n_epochs": 5, "max_grad_norm": 0.5,
        "net_arch": "small", "activation_fn": "tanh", "rollback_alpha": 0.3, "returns_estimator": "gae",
        "trust_region": "kl", "kl_threshold": 0.03, "rollback": "ratio",
    }  # fmt: skip
    entry = {"n_steps": 64, "batch_size": 32, "compile_update": True}
    for sampled in sample_ppo_rollback_params(optuna.trial.FixedTrial(fixed), 1, 1, {}), convert_ppo_rollback_params(fixed):
        kwargs = {**entry, **{k: v for k, v in sampled.items() if k != "policy_kwargs"}}
        assert PPORollback("MlpPolicy", "CartPole-v1", **kwargs).compile_update is False
    # RecurrentPPORollback shares the search space but has no compile_update
    sample_recurrent, convert_recurrent = SAMPLERS["recurrent_ppo_rollback"]
    for sampled in sample_recurrent(optuna.trial.FixedTrial(fixed), 1, 1, {}), convert_recurrent(fixed):
        assert "compile_update" not in sampled
        RecurrentPPORollback("MlpLstmPolicy", "CartPole-v1", **{k: v for k, v in sampled.items() if k != "policy_kwargs"})
    assert PPORollback("MlpPolicy", "CartPole-v1", compile_update=np.True_).compile_update is True
