"""
EnvPoolVecEnv: SB3's VecEnv semantics (reset within the step, terminal observation, time-limit flag, seeds) checked
against a hand-written loop over EnvPool's own API, which resets on the *next* step; and the CLI's --vec-env envpool.
"""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

envpool = pytest.importorskip("envpool")

from sb3_cherry.common.vec_env.envpool_vec_env import EnvPoolVecEnv, make_envpool_vec_env  # noqa: E402


def _cartpole_action(obs: np.ndarray) -> int:
    """A deterministic policy (push towards the pole's lean) whose episodes end by falling after 35-55 steps."""
    return int(obs[2] > 0)


def _reference_episodes(env_id: str, seed: int, n_episodes: int, policy, skip: int = 1, **kwargs) -> list[dict]:
    """
    Episodes of ONE environment through EnvPool's raw gymnasium API (next-step autoreset: the step after the end of
    an episode returns the first observation of the next one and ignores its action); with ``skip``, each agent step
    repeats its action up to ``skip`` times and sums the rewards, stopping at the end of the episode (FrameSkip).
    """
    pool = envpool.make(env_id, env_type="gymnasium", num_envs=1, seed=seed, **kwargs)
    obs, _ = pool.reset()
    episodes, current = [], {"obs": [obs[0]], "rewards": []}
    while len(episodes) < n_episodes:
        action, total = np.array([policy(current["obs"][-1])]), 0.0
        for _ in range(skip):
            obs, reward, terminated, truncated, _ = pool.step(action)
            total += float(reward[0])
            if terminated[0] or truncated[0]:
                break
        current["rewards"].append(float(np.float32(total)))
        current["obs"].append(obs[0])
        if terminated[0] or truncated[0]:
            current["terminated"], current["truncated"] = bool(terminated[0]), bool(truncated[0])
            episodes.append(current)
            obs, *_ = pool.step(np.array([policy(obs[0])]))  # the autoreset step: action ignored
            current = {"obs": [obs[0]], "rewards": []}
    pool.close()
    return episodes


def _adapter_episodes(venv: EnvPoolVecEnv, n_episodes: int, policy) -> list[list[dict]]:
    """Episodes of every environment of ``venv`` as SB3's API presents them."""
    obs = venv.reset()
    n = venv.num_envs
    episodes: list[list[dict]] = [[] for _ in range(n)]
    current = [{"obs": [obs[i]], "rewards": []} for i in range(n)]
    while min(len(e) for e in episodes) < n_episodes:
        obs, rewards, dones, infos = venv.step(np.array([policy(current[i]["obs"][-1]) for i in range(n)]))
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == n
        for i in range(n):
            current[i]["rewards"].append(float(rewards[i]))
            if dones[i]:
                current[i]["obs"].append(infos[i]["terminal_observation"])
                current[i]["truncated"] = infos[i]["TimeLimit.truncated"]
                episodes[i].append(current[i])
                current[i] = {"obs": [obs[i]], "rewards": []}
            else:
                assert "terminal_observation" not in infos[i] and not infos[i]["TimeLimit.truncated"]
                current[i]["obs"].append(obs[i])
    return episodes


def _assert_same_episodes(ours: list[dict], reference: list[dict]) -> None:
    assert len(ours) == len(reference)
    for mine, ref in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(np.stack(mine["obs"]), np.stack(ref["obs"]))
        assert mine["rewards"] == ref["rewards"]
        assert mine["truncated"] == (ref["truncated"] and not ref["terminated"])


@pytest.mark.parametrize("max_episode_steps", [500, 40])  # 40: some episodes end by the time limit
def test_episodes_match_envpool_raw_loop(max_episode_steps):
    """Each env i of the adapter (seed s) plays the episodes of a raw one-env pool seeded s + i, step for step."""
    n_episodes, seed = 4, 7
    venv = EnvPoolVecEnv("CartPole-v1", n_envs=3, seed=seed, env_kwargs={"max_episode_steps": max_episode_steps})
    ours = _adapter_episodes(venv, n_episodes, _cartpole_action)
    venv.close()
    kinds = set()
    for i in range(3):
        reference = _reference_episodes(
            "CartPole-v1", seed + i, n_episodes, _cartpole_action, max_episode_steps=max_episode_steps
        )
        _assert_same_episodes(ours[i][:n_episodes], reference)
        kinds |= {ep["truncated"] for ep in ours[i][:n_episodes]}
    # both kinds of ending are exercised with the short limit
    assert kinds == ({True, False} if max_episode_steps == 40 else {False})


@pytest.mark.parametrize("skip", [2, 3])
def test_frame_skip_matches_repeated_raw_steps(skip):
    """frame_skip: each env repeats its action up to `skip` times (fewer at an episode's end) with summed rewards."""
    venv = EnvPoolVecEnv("CartPole-v1", n_envs=3, seed=1, env_kwargs={"max_episode_steps": 29}, frame_skip=skip)
    ours = _adapter_episodes(venv, 4, _cartpole_action)
    venv.close()
    kinds = set()
    for i in range(3):
        reference = _reference_episodes("CartPole-v1", 1 + i, 4, _cartpole_action, skip=skip, max_episode_steps=29)
        _assert_same_episodes(ours[i][:4], reference)
        kinds |= {ep["truncated"] for ep in ours[i][:4]}
    assert kinds == {True, False}
    # envs end at different frames within a step (the subset stepping is exercised)
    assert len({len(ep["rewards"]) for eps in ours for ep in eps[:4]}) > 1


def test_frame_skip_sums_float_rewards_as_frameskip():
    """Hopper's rewards are not integers: summed in double precision per step, then float32 (as FrameSkip + SB3)."""

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs[1:4])

    venv = EnvPoolVecEnv("Hopper-v5", n_envs=2, seed=2, env_kwargs={"max_episode_steps": 25}, frame_skip=3)
    ours = _adapter_episodes(venv, 2, policy)
    venv.close()
    for i in range(2):
        reference = _reference_episodes("Hopper-v5", 2 + i, 2, policy, skip=3, max_episode_steps=25)
        _assert_same_episodes(ours[i][:2], reference)


def test_box_actions_and_float64_observations():
    """Hopper-v5 (float64 observations and actions): same episodes as the raw loop, spaces kept in their dtype."""
    venv = EnvPoolVecEnv("Hopper-v5", n_envs=2, seed=3, env_kwargs={"max_episode_steps": 30})
    assert venv.observation_space.dtype == np.float64 and venv.action_space.shape == (3,)

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs[1:4])

    ours = _adapter_episodes(venv, 2, policy)
    venv.close()
    for i in range(2):
        _assert_same_episodes(ours[i][:2], _reference_episodes("Hopper-v5", 3 + i, 2, policy, max_episode_steps=30))


def test_vecmonitor_episode_statistics():
    """make_envpool_vec_env's VecMonitor reports each episode's return and length (sum / count of its rewards)."""
    venv = make_envpool_vec_env("CartPole-v1", n_envs=2, seed=0)
    obs = venv.reset()
    returns, lengths = np.zeros(2), np.zeros(2, dtype=int)
    checked = 0
    while checked < 4:
        obs, rewards, dones, infos = venv.step(np.array([_cartpole_action(o) for o in obs]))
        returns += rewards
        lengths += 1
        for i in np.flatnonzero(dones):
            assert infos[i]["episode"]["r"] == pytest.approx(returns[i]) and infos[i]["episode"]["l"] == lengths[i]
            returns[i], lengths[i] = 0.0, 0
            checked += 1
    venv.close()


def test_seed_applies_at_next_reset_and_model_seed_reproduces():
    """VecEnv.seed(s) then reset() gives the pool of seed s (as SB3 models seed their env); same seed, same data."""
    venv = EnvPoolVecEnv("CartPole-v1", n_envs=2, seed=0)
    assert venv.seed(11) == [11, 12]
    first = venv.reset()
    fresh = EnvPoolVecEnv("CartPole-v1", n_envs=2, seed=11)
    np.testing.assert_array_equal(first, fresh.reset())
    np.testing.assert_array_equal(venv.reset(), fresh.reset())  # no new seed: the pool continues
    venv.close(), fresh.close()

    from sb3_cherry import PPORollback

    params = []
    for _ in range(2):
        env = make_envpool_vec_env("CartPole-v1", n_envs=2, seed=None)
        model = PPORollback("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=5, device="cpu")
        model.learn(128)
        params.append(np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()]))
        env.close()
    np.testing.assert_array_equal(params[0], params[1])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="EnvPool has no environment 'NoSuchEnv-v0'"):
        EnvPoolVecEnv("NoSuchEnv-v0")
    # rl_zoo3 draws seeds up to 2**32: reduced into EnvPool's int32 range, env 1 = env 0 + 1 still
    large = EnvPoolVecEnv("CartPole-v1", 2, seed=3_000_000_000)
    reduced = EnvPoolVecEnv("CartPole-v1", 2, seed=3_000_000_000 % (2**31 - 2))
    np.testing.assert_array_equal(large.reset(), reduced.reset())
    assert large.seed(-5) == [-5 % (2**31 - 2), -5 % (2**31 - 2) + 1]
    large.close(), reduced.close()
    with pytest.raises(ValueError, match="n_envs"):
        EnvPoolVecEnv("CartPole-v1", n_envs=0)
    venv = EnvPoolVecEnv("CartPole-v1", n_envs=2, seed=0)
    assert venv.get_attr("render_mode") == [None, None] and venv.env_is_wrapped(object) == [False, False]
    with pytest.raises(NotImplementedError, match="no Python attributes"):
        venv.set_attr("foo", 1)
    with pytest.raises(NotImplementedError, match="no Python methods"):
        venv.env_method("foo")
    with pytest.raises(AttributeError, match="no attribute 'no_such_attr'"):
        venv.get_attr("no_such_attr")
    venv.set_options({"low": 0.0})
    with pytest.raises(NotImplementedError, match="reset options"):
        venv.reset()
    venv.close()
    # fewer actions than envs: EnvPool's C++ check aborted the whole process (SIGABRT, no traceback); DummyVecEnv raises
    venv = EnvPoolVecEnv("CartPole-v1", n_envs=3, seed=0)
    venv.reset()
    for actions in (np.zeros(2, dtype=np.int64), np.int64(0)):
        with pytest.raises(ValueError, match="give one action per environment"):
            venv.step_async(actions)
    venv.step(np.zeros(3, dtype=np.int64))
    venv.close()
    for use in (venv.reset, lambda: venv.step(np.zeros(3, dtype=np.int64))):  # (AttributeError on None before)
        with pytest.raises(ValueError, match="EnvPoolVecEnv is closed"):
            use()
    venv.seed(1)
    assert venv.reset().shape == (3, 4)  # a new pool
    venv.close()


def _train(tmp_path, *extra: str, seed: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sb3_cherry", "train", "--algo", "ppo_rollback", "--env", "CartPole-v1"]
    cmd += ["-f", str(tmp_path), "-n", "1024", "--seed", str(seed), "--eval-freq", "-1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_trains_on_envpool_and_refuses_what_it_cannot_do(tmp_path):
    """`sb3-cherry train --vec-env envpool`: training envs from EnvPool (their monitor file), model saved."""
    # a seed beyond int32, as rl_zoo3 draws when --seed is not given
    done = _train(tmp_path, "--vec-env", "envpool", "--envpool-threads", "1", seed=3_000_000_000)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "ppo_rollback" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").exists() and (run / "envpool.monitor.csv").exists()
    refused = _train(tmp_path, "--vec-env", "envpool", "--run-checkpoint-freq", "512")
    assert refused.returncode != 0 and "no run checkpoints" in refused.stderr
    refused = _train(tmp_path, "--envpool-threads", "2")
    assert refused.returncode != 0 and "--envpool-threads is an option of --vec-env envpool" in refused.stderr
    refused = _train(tmp_path, "--vec-env", "envpool", "--hyperparams", "env_kwargs:dict(sutton_barto_reward=True)")
    assert refused.returncode != 0 and "cannot take" in refused.stderr


def test_observation_wrappers_match_gymnasium_formulas():
    """VecObservationWrapper with gymnasium's Resize / Grayscale: hand-written INTER_AREA resize and luma weights."""
    import cv2
    from gymnasium.wrappers import GrayscaleObservation, ResizeObservation

    from sb3_cherry.common.vec_env.envpool_vec_env import VecObservationWrapper

    resized = VecObservationWrapper(EnvPoolVecEnv("CarRacing-v3", 2, seed=0), ResizeObservation, {"shape": (64, 48)})
    gray = VecObservationWrapper(resized, GrayscaleObservation, {"keep_dim": True})
    assert gray.observation_space.shape == (64, 48, 1) and gray.observation_space.dtype == np.uint8
    same = EnvPoolVecEnv("CarRacing-v3", 2, seed=0)  # same seed: the same first frames, unwrapped
    raw = same.reset()
    same.close()
    expected = np.stack(
        [
            (cv2.resize(o, (48, 64), interpolation=cv2.INTER_AREA) @ np.array([0.2125, 0.7154, 0.0721])).astype(np.uint8)[
                ..., None
            ]
            for o in raw
        ]
    )
    np.testing.assert_array_equal(gray.reset(), expected)
    gray.close()
    from gymnasium.wrappers import DelayObservation, NormalizeObservation

    for wrapper_class in (object, DelayObservation, NormalizeObservation):  # one instance would mix the envs
        with pytest.raises(ValueError, match="stateless gymnasium observation wrapper"):
            VecObservationWrapper(EnvPoolVecEnv("CartPole-v1", seed=0), wrapper_class)  # type: ignore[arg-type]


def test_config_wrappers_translated_for_envpool():
    """The CarRacing entry's env_wrapper: FrameSkip -> frame_skip, Resize + Grayscale -> per-env layers."""
    from sb3_cherry.common.safe_config import UnsafeConfigError
    from sb3_cherry.common.zoo_config import load_zoo_entry

    entry = load_zoo_entry("ppo_rollback", "CarRacing-v3")
    venv = make_envpool_vec_env("CarRacing-v3", n_envs=2, seed=0, num_threads=1, env_wrapper=entry.env_wrapper)
    assert venv.observation_space.shape == (64, 64, 1)
    assert venv.unwrapped.frame_skip == 2
    obs = venv.reset()
    obs, rewards, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
    assert obs.shape == (2, 64, 64, 1) and rewards.shape == (2,)
    venv.close()
    with pytest.raises(ValueError, match="cannot act on EnvPool"):
        make_envpool_vec_env("CartPole-v1", env_wrapper="rl_zoo3.wrappers.TimeFeatureWrapper")
    with pytest.raises(UnsafeConfigError):
        make_envpool_vec_env("CartPole-v1", env_wrapper="os.system")


def test_observation_wrapper_transforms_terminal_observations():
    """The terminal observation in the info goes through the wrapper too (here: a scale, checked by hand)."""
    from gymnasium.wrappers import TransformObservation

    from sb3_cherry.common.vec_env.envpool_vec_env import VecObservationWrapper

    kwargs = {"func": lambda o: 2.0 * o, "observation_space": None}
    plain = EnvPoolVecEnv("CartPole-v1", 2, seed=4, env_kwargs={"max_episode_steps": 5})
    scaled = VecObservationWrapper(
        EnvPoolVecEnv("CartPole-v1", 2, seed=4, env_kwargs={"max_episode_steps": 5}), TransformObservation, kwargs
    )
    np.testing.assert_array_equal(scaled.reset(), 2.0 * plain.reset())
    for _ in range(5):
        actions = np.zeros(2, dtype=np.int64)
        (obs, _, dones, infos), (obs_s, _, _, infos_s) = plain.step(actions), scaled.step(actions)
        np.testing.assert_array_equal(obs_s, 2.0 * obs)
    assert dones.all()
    for info, info_s in zip(infos, infos_s, strict=True):
        np.testing.assert_array_equal(info_s["terminal_observation"], 2.0 * info["terminal_observation"])


def test_results_put_in_env_order():
    """Rows that EnvPool returns in another order than env ids are sorted by env id (and copied)."""
    ids = np.array([2, 0, 1])
    obs = np.array([[20.0], [0.0], [10.0]])
    rewards = np.array([2.0, 0.0, 1.0], dtype=np.float32)
    sorted_obs, sorted_rewards = EnvPoolVecEnv._in_env_order(ids, obs, rewards)
    np.testing.assert_array_equal(sorted_obs, [[0.0], [10.0], [20.0]])
    np.testing.assert_array_equal(sorted_rewards, [0.0, 1.0, 2.0])
    in_order, *_ = EnvPoolVecEnv._in_env_order(np.arange(3), obs)
    assert in_order is not obs and np.array_equal(in_order, obs)


def test_info_keywords_and_wrapper_subclasses_are_refused_up_front():
    # EnvPool's infos hold no keys VecMonitor could log (the first episode end raised a KeyError); a subclass of a
    # stateless wrapper (gymnasium's AddRenderObservation subclasses TransformObservation) may need state or the env
    from sb3_cherry.common.vec_env.envpool_vec_env import VecObservationWrapper

    made = []
    with pytest.MonkeyPatch.context() as patch:  # refused before a pool is made (its threads lived on)
        import sb3_cherry.common.vec_env.envpool_vec_env as module

        patch.setattr(module, "EnvPoolVecEnv", lambda *args, **kwargs: made.append(1))
        with pytest.raises(ValueError, match="info_keywords"):
            make_envpool_vec_env("CartPole-v1", n_envs=2, seed=0, info_keywords=("elapsed_step",))
    assert not made
    venv = make_envpool_vec_env("CartPole-v1", n_envs=2, seed=0)
    with pytest.raises(ValueError, match="stateless gymnasium observation wrapper"):
        VecObservationWrapper(venv, gym.wrappers.AddRenderObservation, {})
    venv.close()


@pytest.mark.parametrize("env_id", ["BipedalWalker-v3", "Hopper-v5", "CarRacing-v3", "CartPole-v1"])
def test_declared_spaces_are_gymnasiums(env_id, tmp_path):
    # EnvPool declares BipedalWalker's observation bounds as [1.2e-38, 3.4e38] and MuJoCo's actions as float64; the
    # VecEnv declares gymnasium's spaces, so a model trained on it loads onto gymnasium's env (SB3 checks the spaces)
    from stable_baselines3 import PPO

    reference = gym.make(env_id)
    venv = EnvPoolVecEnv(env_id, n_envs=2, seed=0, num_threads=1)
    assert venv.observation_space == reference.observation_space
    assert venv.action_space == reference.action_space
    obs = venv.reset()
    assert obs.dtype == reference.observation_space.dtype
    actions = np.stack([reference.action_space.sample() for _ in range(2)])
    venv.step(actions)  # float32 actions reach a float64 pool in its dtype
    if env_id != "CarRacing-v3":  # (an image model: the same check, slower)
        PPO("MlpPolicy", venv, n_steps=8, batch_size=8, device="cpu").save(tmp_path / "model")
        PPO.load(tmp_path / "model", env=reference, device="cpu")
    venv.close()
    reference.close()
