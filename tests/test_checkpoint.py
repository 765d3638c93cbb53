"""Run checkpoints: two chunks give the same run as one uninterrupted ``learn``."""

import io
import json
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from sb3_cherry import CherryA2C, PPORollback
from sb3_cherry.common.checkpoint import (
    RunCheckpointCallback,
    continue_run,
    has_run_checkpoint,
    load_run_checkpoint,
    save_run_checkpoint,
)

TOTAL = 1024


def make_env(env_id: str = "CartPole-v1", n_envs: int = 2, normalize: bool = True):
    env = make_vec_env(env_id, n_envs=n_envs, seed=3)
    return VecNormalize(env, gamma=0.98) if normalize else env


def make_model(env, algo=PPORollback):
    kwargs = dict(n_steps=64, seed=5, learning_rate=LinearSchedule(1e-3, 0.0, 1.0), gamma=0.98)
    if algo is PPORollback:
        kwargs.update(batch_size=32, n_epochs=2, clip_range=LinearSchedule(0.3, 0.1, 1.0))
    return algo("MlpPolicy", env, **kwargs)


def params(model):
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


class _Fires(BaseCallback):
    """Records the steps at which a period of ``every`` calls fires (as EvalCallback's ``eval_freq`` does)."""

    def __init__(self, every: int, fired: list[int]):
        super().__init__()
        self.every, self.fired = every, fired

    def _on_step(self) -> bool:
        if self.n_calls % self.every == 0:
            self.fired.append(self.num_timesteps)
        return True


def test_continued_callbacks_fire_at_the_steps_of_one_run(tmp_path):
    # continue_run passed the user's callbacks on with n_calls = 0: periods shifted by the steps of the first chunk
    from stable_baselines3.common.callbacks import CallbackList

    reference, fired = make_model(make_env()), {"ref": [], "ref_list": [], "new": [], "new_list": []}
    reference.learn(TOTAL, callback=[_Fires(50, fired["ref"]), CallbackList([_Fires(30, fired["ref_list"])])])
    folder = tmp_path / "ckpt"
    make_model(make_env()).learn(TOTAL, callback=RunCheckpointCallback(folder, save_freq=256, stop_after=256))
    model, state = load_run_checkpoint(PPORollback, folder, make_env())
    continue_run(model, state, callback=[_Fires(50, fired["new"]), CallbackList([_Fires(30, fired["new_list"])])])
    assert fired["new"] and fired["new"] == [t for t in fired["ref"] if t > state.num_timesteps]
    assert fired["new_list"] and fired["new_list"] == [t for t in fired["ref_list"] if t > state.num_timesteps]


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_two_chunks_equal_one_run(tmp_path, algo):
    reference = make_model(make_env(), algo)
    reference.learn(TOTAL)

    folder = tmp_path / "ckpt"
    first = make_model(make_env(), algo)
    first.learn(TOTAL, callback=RunCheckpointCallback(folder, save_freq=256, stop_after=256))
    assert has_run_checkpoint(folder)
    assert 256 <= first.num_timesteps < TOTAL
    del first

    # a new process would start here: fresh env, fresh RNG states
    th.manual_seed(1234)
    np.random.seed(1234)
    model, state = load_run_checkpoint(algo, folder, make_env())
    assert state.envs_exact and state.total_timesteps == TOTAL and state.remaining == TOTAL - state.num_timesteps
    continue_run(model, state)

    assert model.num_timesteps == reference.num_timesteps
    assert model._n_updates == reference._n_updates
    assert model._current_progress_remaining == reference._current_progress_remaining
    assert model.policy.optimizer.param_groups[0]["lr"] == reference.policy.optimizer.param_groups[0]["lr"]
    ref_params, new_params = params(reference), params(model)
    for key in ref_params:
        assert th.equal(ref_params[key], new_params[key]), key
    ref_norm, new_norm = reference.get_vec_normalize_env(), model.get_vec_normalize_env()
    np.testing.assert_array_equal(ref_norm.obs_rms.mean, new_norm.obs_rms.mean)
    np.testing.assert_array_equal(ref_norm.ret_rms.var, new_norm.ret_rms.var)


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
def test_gsde_chunks_equal_one_run(tmp_path, algo):
    # gSDE draws its exploration noise at the start of every rollout, before on_rollout_start (where the checkpoint is
    # written): the checkpoint holds the random states from before that draw, which the resumed rollout makes again
    kwargs = dict(n_steps=64, seed=5, use_sde=True, sde_sample_freq=4)
    if algo is PPORollback:
        kwargs.update(batch_size=64, n_epochs=1)
    reference = algo("MlpPolicy", make_env("Pendulum-v1", normalize=False), **kwargs).learn(512)
    folder = tmp_path / "ckpt"
    first = algo("MlpPolicy", make_env("Pendulum-v1", normalize=False), **kwargs)
    first.learn(512, callback=RunCheckpointCallback(folder, save_freq=128, stop_after=128))
    assert "reset_noise" not in vars(first.policy)  # the callback's wrapper is gone after learn
    th.manual_seed(1234)
    model, state = load_run_checkpoint(algo, folder, make_env("Pendulum-v1", normalize=False))
    assert state.num_timesteps == 128
    continue_run(model, state)
    ref_params, new_params = params(reference), params(model)
    for key in ref_params:
        assert th.equal(ref_params[key], new_params[key]), key


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_recurrent_chunks_equal_one_run(tmp_path, rnn_type):
    # the recurrent hidden states at the checkpoint (mid-episode) are part of the run: the next rollout starts from them
    from sb3_cherry import RecurrentPPORollback

    kwargs = dict(n_steps=64, batch_size=64, n_epochs=1, seed=5, policy_kwargs=dict(rnn_type=rnn_type))
    reference = RecurrentPPORollback("MlpLstmPolicy", make_env(normalize=False), **kwargs).learn(512)
    folder = tmp_path / "ckpt"
    first = RecurrentPPORollback("MlpLstmPolicy", make_env(normalize=False), **kwargs)
    first.learn(512, callback=RunCheckpointCallback(folder, save_freq=128, stop_after=128))
    th.manual_seed(1234)
    model, state = load_run_checkpoint(RecurrentPPORollback, folder, make_env(normalize=False))
    assert state.num_timesteps == 128
    assert float(model._last_lstm_states.pi[0].abs().sum()) > 0  # restored, not the zeros of a new model
    continue_run(model, state)
    ref_params, new_params = params(reference), params(model)
    for key in ref_params:
        assert th.equal(ref_params[key], new_params[key]), key


def test_chunks_stop_at_each_period_when_resumed_past_a_multiple(tmp_path):
    # rollouts of 96 steps, a checkpoint and a stop every 256: checkpoints come at the first update boundary past each
    # multiple (288, 576, 768, 1056); the process resumed at 576 reaches the multiple 768 after only 192 steps and must
    # still stop there, not run on to 1056 (counting steps since the start gave 288, 576, 1056)
    folder = tmp_path / "ckpt"
    saver = RunCheckpointCallback(folder, save_freq=256, stop_after=256)
    PPORollback("MlpPolicy", make_env(n_envs=1), n_steps=96, batch_size=32, n_epochs=1, seed=0).learn(2000, saver)
    stops = [saver.saved_at]
    for _ in range(3):  # each chunk in a new process: loaded from the last checkpoint
        model, state = load_run_checkpoint(PPORollback, folder, make_env(n_envs=1))
        saver = RunCheckpointCallback(folder, save_freq=256, stop_after=256)
        continue_run(model, state, callback=saver)
        stops.append(saver.saved_at)
    assert stops == [288, 576, 768, 1056]
    # a stop period of two checkpoint periods: the multiple 256 (at 288) is more than a rollout short of 512
    saver = RunCheckpointCallback(tmp_path / "ckpt2", save_freq=256, stop_after=512)
    PPORollback("MlpPolicy", make_env(n_envs=1), n_steps=96, batch_size=32, n_epochs=1, seed=0).learn(2000, saver)
    assert saver.saved_at == 576


def test_gail_chunks_stop_at_each_period(tmp_path):
    # GAIL has no n_steps of its own (its generator's rollout is 48 x 2 = 96 steps): the stop rule measures the rollout
    pytest.importorskip("imitation")
    from sb3_cherry import GAIL
    from sb3_cherry.demos import record_demos

    class Expert:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return (obs[:, 2] + 0.5 * obs[:, 3] + 0.1 * obs[:, 1] > 0).astype(np.int64), state

    demos = str(tmp_path / "demos.npz")
    record_demos(Expert(), "CartPole-v1", n_episodes=2, path=demos, seed=0)
    kwargs = dict(
        generator_kwargs=dict(n_steps=48, batch_size=48, n_epochs=1), demo_batch_size=64, allow_variable_horizon=True
    )
    folder = tmp_path / "ckpt"
    saver = RunCheckpointCallback(folder, save_freq=256, stop_after=256)
    GAIL("MlpPolicy", make_env(normalize=False), demonstrations=demos, seed=0, **kwargs).learn(2000, callback=saver)
    stops = [saver.saved_at]
    for _ in range(2):
        model, state = load_run_checkpoint(GAIL, folder, make_env(normalize=False), demonstrations=demos)
        saver = RunCheckpointCallback(folder, save_freq=256, stop_after=256)
        continue_run(model, state, callback=saver)
        stops.append(saver.saved_at)
    assert stops == [288, 576, 768]  # was [288, 768, 1056]: n_envs taken for the rollout


def test_mujoco_state_is_restored_exactly(tmp_path):
    pytest.importorskip("mujoco")
    reference = make_model(make_env("Hopper-v5", n_envs=1))
    reference.learn(256)
    first = make_model(make_env("Hopper-v5", n_envs=1))
    first.learn(256, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=128, stop_after=128))
    model, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", make_env("Hopper-v5", n_envs=1))
    assert state.envs_exact
    continue_run(model, state)
    for key, value in params(reference).items():
        assert th.equal(value, params(model)[key]), key


class OpaqueStateEnv(gym.Wrapper):
    """An env holding state that is not plain data: it cannot be captured, so a resume starts new episodes."""

    def __init__(self, env):
        super().__init__(env)
        self.handle = object()


def test_uncapturable_env_resumes_with_new_episodes(tmp_path):
    def build():
        return make_vec_env("CartPole-v1", n_envs=2, seed=0, wrapper_class=OpaqueStateEnv)

    model = make_model(build())
    model.learn(256)
    save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=512, extra={"evaluations": [1.0, 2.5]})
    loaded, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", build())
    assert not state.envs_exact and state.extra == {"evaluations": [1.0, 2.5]}
    # the new episodes are seeded with the model's seed plus the steps done, not the run's first seed (load's), which
    # replayed the first chunk's episodes (CLI --resume); independent reference: an env seeded so by SB3 itself
    first = make_vec_env("CartPole-v1", n_envs=2, seed=5).reset()
    expected = make_vec_env("CartPole-v1", n_envs=2, seed=5 + 256).reset()
    obs = loaded.get_env().reset()
    np.testing.assert_array_equal(obs, expected)
    assert not np.array_equal(obs, first)
    loaded, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", build())
    continue_run(loaded, state)
    assert loaded.num_timesteps == 512


def test_checkpoint_errors(tmp_path):
    model = make_model(make_env())
    model.learn(128)
    save_run_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="PPORollback, not CherryA2C"):
        load_run_checkpoint(CherryA2C, tmp_path / "ckpt", make_env())
    with pytest.raises(ValueError, match="VecEnv layers"):
        load_run_checkpoint(PPORollback, tmp_path / "ckpt", make_env(normalize=False))
    with pytest.raises(ValueError, match="not a complete run checkpoint"):
        load_run_checkpoint(PPORollback, tmp_path / "missing", make_env())
    async_model = PPORollback("MlpPolicy", make_env(), n_steps=64, collection="async")
    with pytest.raises(ValueError, match="collection='sync'"):
        async_model.learn(128, callback=RunCheckpointCallback(tmp_path / "a", save_freq=64))


def test_committed_benchmark_checkpoints_are_readable(capsys):
    # the README's Humanoid commands (evaluate, video, beta_deterministic, run_humanoid.sh) read these folders; the
    # Humanoid ones, written before run_state.json had 'other_envs', were refused as "damaged or crafted"
    import pathlib

    from sb3_cherry.checkpoint_eval import checkpoint_folder
    from sb3_cherry.cli import main
    from sb3_cherry.common.checkpoint import read_run_state

    root = pathlib.Path(__file__).parent.parent / "benchmarks" / "checkpoints"
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    assert len(folders) >= 7
    for folder in folders:
        state = read_run_state(checkpoint_folder(folder))
        assert state["algorithm"] == "PPORollback" and state["num_timesteps"] > 0, folder
    humanoid = root / "Humanoid-v5_ppo_rollback_zoo_0"
    main(["evaluate", "--env", "Humanoid-v5", "--model", str(humanoid), "-n", "1", "--json", "-"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_episodes"] == 1 and summary["mean_return"] > 1000  # (README: 5796.8 over 1000 episodes)


def test_frame_stack_two_chunks_equal_one_run(tmp_path):
    """VecFrameStack's stacked frames are restored: two chunks equal one run."""
    from stable_baselines3.common.vec_env import VecFrameStack

    def build():
        return VecFrameStack(make_env(), 3)

    reference = make_model(build())
    reference.learn(512)
    first = make_model(build())
    first.learn(512, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=128, stop_after=128))
    model, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", build())
    assert state.envs_exact
    continue_run(model, state)
    for key, value in params(reference).items():
        assert th.equal(value, params(model)[key]), key


def test_dict_frame_stack_frames_restored(tmp_path):
    """Dict observations (image + vector, VecTransposeImage added by SB3): each key's stacked frames come back."""
    from stable_baselines3.common.envs import SimpleMultiObsEnv
    from stable_baselines3.common.vec_env import VecFrameStack

    def build():
        return VecFrameStack(make_vec_env(SimpleMultiObsEnv, n_envs=2, seed=3), 2)

    model = PPORollback("MultiInputPolicy", build(), n_steps=64, batch_size=32, n_epochs=1, seed=5)
    model.learn(128)
    saved = {k: v.stacked_obs.copy() for k, v in model.get_env().venv.stacked_obs.sub_stacked_observations.items()}
    assert any(frames.any() for frames in saved.values())
    save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=256)
    loaded, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", build())
    restored = loaded.get_env().venv.stacked_obs.sub_stacked_observations
    assert state.envs_exact and set(restored) == set(saved)
    for key, frames in saved.items():
        np.testing.assert_array_equal(restored[key].stacked_obs, frames)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import os

    import sb3_cherry.common.checkpoint as checkpoint

    model = make_model(make_env(normalize=False))
    model.learn(128)
    folder = tmp_path / "ckpt"
    save_run_checkpoint(model, folder, total_timesteps=TOTAL)
    model.learn(128, reset_num_timesteps=False)
    real_replace = os.replace

    def interrupted(src, dst):
        # the new checkpoint's rename into place, after the old one was moved aside (Ctrl-C, or a full disk)
        if str(dst) == str(folder) and ".tmp" in str(src):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_run_checkpoint(model, folder, total_timesteps=TOTAL)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or .old folder left
    assert has_run_checkpoint(folder)
    _, state = load_run_checkpoint(PPORollback, folder, make_env(normalize=False))
    assert state.num_timesteps == 128  # the previous checkpoint


def test_stored_generator_names_only_a_numpy_bit_generator(tmp_path):
    # a checkpoint is data: a generator state naming another np.random function is refused, not called

    model = make_model(make_env(normalize=False))
    model.learn(64)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    text = (folder / "run_state.json").read_text()
    assert '"bit_generator": "PCG64"' in text  # the envs' np_random
    (folder / "run_state.json").write_text(text.replace('"bit_generator": "PCG64"', '"bit_generator": "seed"'))
    with pytest.raises(ValueError, match="unknown bit generator 'seed'"):
        load_run_checkpoint(PPORollback, folder, make_env(normalize=False))


def test_env_built_differently_is_named(tmp_path):
    # an env with another wrapper chain than the run's: a ValueError that says what to build, not a bare assertion
    model = make_model(make_env(normalize=False))
    model.learn(64)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    other = make_vec_env("CartPole-v1", n_envs=2, seed=3, wrapper_class=gym.wrappers.RecordEpisodeStatistics)
    with pytest.raises(ValueError, match="wrapper layers for env 0"):
        load_run_checkpoint(PPORollback, folder, other)


def test_gsde_capture_survives_a_learn_that_raised(tmp_path):
    # a learn that raised never ran on_training_end: the next callback replaces the stale wrapper and still captures
    from stable_baselines3.common.callbacks import BaseCallback

    class Boom(BaseCallback):
        def _on_step(self):
            if self.num_timesteps >= 100:
                raise RuntimeError("boom")
            return True

    model = PPORollback("MlpPolicy", make_env("Pendulum-v1", normalize=False), n_steps=64, batch_size=64, use_sde=True)
    first = RunCheckpointCallback(tmp_path / "a", save_freq=128)
    with pytest.raises(RuntimeError, match="boom"):
        model.learn(512, callback=[first, Boom()])
    second = RunCheckpointCallback(tmp_path / "b", save_freq=128)
    model.learn(256, callback=second, reset_num_timesteps=False)
    assert second.rng_before_noise is not None and "reset_noise" not in vars(model.policy)


def test_single_channel_images_resume_exactly(tmp_path):
    """VecTransposeImage hands out a transposed view; the resumed run's first observation batch has the same memory
    layout (torch picks its convolution kernel, and its rounding, from the strides)."""
    import sb3_cherry.envs  # noqa: F401  (registers PixelCatch)

    def pixel_env():
        return make_vec_env("sb3_cherry/PixelCatch-v0", n_envs=2, seed=3)

    kwargs = dict(n_steps=32, batch_size=32, n_epochs=1, seed=5)
    reference = PPORollback("CnnPolicy", pixel_env(), **kwargs).learn(192)
    first = PPORollback("CnnPolicy", pixel_env(), **kwargs)
    first.learn(192, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=64, stop_after=64))
    strides = first._last_obs.strides
    model, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", pixel_env())
    assert state.envs_exact and model._last_obs.strides == strides
    continue_run(model, state)
    for key, value in params(reference).items():
        assert th.equal(value, params(model)[key]), key


def test_observation_layout_from_a_file_is_checked():
    from sb3_cherry.common.checkpoint import _laid_out_as

    view = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(0, 2, 1)
    copy = np.ascontiguousarray(view)
    restored = _laid_out_as(copy, list(view.strides))
    assert restored.strides == view.strides and np.array_equal(restored, view)
    for strides in ([0, 0, 0], [96, 4, 16 * 10**6], [-4, 4, 16], [3, 5, 7], [96, 16, 4, 1]):
        assert _laid_out_as(copy, strides) is copy  # overlapping, out of range, negative, unaligned, wrong rank


def test_adversarial_checkpoints_say_they_continue_approximately(tmp_path):
    from sb3_cherry.common.checkpoint import approximate_reason

    pytest.importorskip("imitation")
    from sb3_cherry import BCO, GAIL

    assert approximate_reason(make_model(make_env())) is None
    assert approximate_reason(BCO.__new__(BCO)) is None  # its transitions are in the checkpoint (tests/test_bco.py)
    assert "discriminator" in approximate_reason(GAIL.__new__(GAIL))


def test_save_killed_between_renames_leaves_a_readable_checkpoint(tmp_path, monkeypatch):
    import os
    import shutil

    import sb3_cherry.common.save_util as save_util

    model = make_model(make_env(normalize=False))
    model.learn(128)
    run = tmp_path / "run"
    folder = run / "ckpt"
    save_run_checkpoint(model, folder, total_timesteps=TOTAL)
    model.learn(128, reset_num_timesteps=False)
    crashed = tmp_path / "crashed"
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".old"):
            # a kill (SIGKILL, OOM, preemption) runs no handler: the disk stays as it is right after this rename
            shutil.copytree(run, crashed, symlinks=True)
            # a reader meanwhile does not put the previous checkpoint back under the running save
            assert not has_run_checkpoint(folder) and (run / ".ckpt.old").is_dir()

    monkeypatch.setattr(os, "replace", replace)
    save_run_checkpoint(model, folder, total_timesteps=TOTAL)
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["ckpt"]
    left = {p.name for p in crashed.iterdir()}  # no ckpt/: the previous checkpoint and the new one's temporary folder
    assert len(left) == 2 and ".ckpt.old" in left and all(name.endswith((".old", ".tmp")) for name in left)

    # the next process (a restarted container may even give it the same pid)
    monkeypatch.setattr(save_util, "_PROCESS_TOKEN", "0badf00d", raising=False)
    assert has_run_checkpoint(crashed / "ckpt")
    _, state = load_run_checkpoint(PPORollback, crashed / "ckpt", make_env(normalize=False))
    assert state.num_timesteps == 128  # the previous checkpoint
    save_run_checkpoint(model, crashed / "ckpt", total_timesteps=TOTAL)
    assert sorted(p.name for p in crashed.iterdir()) == ["ckpt"]  # the killed save's temporary folder is removed


def test_checkpoint_reads_the_umask_without_changing_it(tmp_path, umask_read_only):
    folder = save_run_checkpoint(make_model(make_env(normalize=False)), tmp_path / "ckpt", total_timesteps=TOTAL)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert (folder / "model.zip").stat().st_mode & 0o777 == 0o640


def _rewrite_arrays(folder, change, compress=False):
    """Rewrite a checkpoint's run_state.npz with ``change(arrays)`` applied (a dict of name -> array)."""
    with np.load(folder / "run_state.npz") as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    change(arrays)
    (np.savez_compressed if compress else np.savez)(folder / "run_state.npz", **arrays)


def test_non_finite_normalization_statistics_are_refused(tmp_path):
    # as for vecnormalize.pkl: a diverged run's NaN statistics would make every observation NaN, blamed on the policy
    from sb3_cherry.common.checkpoint import checkpoint_normalization

    model = make_model(make_env())
    model.learn(128)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    assert checkpoint_normalization(folder) is not None
    mean_key = next(k for k in np.load(folder / "run_state.npz").files if k.endswith("obs_rms.mean"))
    _rewrite_arrays(folder, lambda arrays: arrays[mean_key].__setitem__(0, np.nan))
    with pytest.raises(ValueError, match=r"run_state\.npz: the normalisation statistics obs_rms\.mean are not finite"):
        load_run_checkpoint(PPORollback, folder, make_env())
    with pytest.raises(ValueError, match=r"obs_rms\.mean are not finite"):
        checkpoint_normalization(folder)


def test_checkpoint_arrays_cannot_allocate_beyond_the_file(tmp_path):
    # numpy allocates what an entry's header declares: a deflated entry, a header larger than its data, or one entry
    # referred to many times by run_state.json could make a small file allocate gigabytes
    model = make_model(make_env())
    model.learn(128)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    _rewrite_arrays(folder, lambda arrays: None, compress=True)
    with pytest.raises(ValueError, match="compressed entries"):
        load_run_checkpoint(PPORollback, folder, make_env())

    folder = save_run_checkpoint(model, tmp_path / "ckpt2", total_timesteps=TOTAL)
    key = next(k for k in np.load(folder / "run_state.npz").files if k.endswith("obs_rms.mean"))
    with zipfile.ZipFile(folder / "run_state.npz") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()  # the entry's data stays 4 floats, its header declares 2**28 (2 GiB)
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**28,)})
    entries[f"{key}.npy"] = header.getvalue() + np.zeros(4).tobytes()
    with zipfile.ZipFile(folder / "run_state.npz", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match=f"cannot read array '{key}'.*the file is damaged or crafted"):
        load_run_checkpoint(PPORollback, folder, make_env())

    folder = save_run_checkpoint(model, tmp_path / "ckpt3", total_timesteps=TOTAL)
    state = json.loads((folder / "run_state.json").read_text())
    state["ep_info_buffer"] = [{"__array__": key}] * 100_000
    (folder / "run_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="what is left of the archive's own size"):
        load_run_checkpoint(PPORollback, folder, make_env())


def test_checkpoint_scalars_and_attribute_names_are_plain(tmp_path):
    model = make_model(make_env(normalize=False))
    model.learn(64)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    text = (folder / "run_state.json").read_text()
    assert '"_elapsed_steps":' in text  # TimeLimit's counter
    (folder / "run_state.json").write_text(text.replace('"_elapsed_steps":', '"__class__":', 1))
    with pytest.raises(ValueError, match="attribute '__class__'"):
        load_run_checkpoint(PPORollback, folder, make_env(normalize=False))
    folder = save_run_checkpoint(model, tmp_path / "ckpt2", total_timesteps=TOTAL)
    state = json.loads((folder / "run_state.json").read_text())
    state["ep_info_buffer"] = [{"__scalar__": 10**12, "dtype": "V1"}]  # np.void(10**12): a terabyte of zeros
    (folder / "run_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="scalar has dtype"):
        load_run_checkpoint(PPORollback, folder, make_env(normalize=False))


def test_dict_observations_with_vec_normalize_resume_exactly(tmp_path):
    # VecNormalize keeps Dict observations' spaces in obs_spaces, a dict of Spaces: every checkpoint raised _Unplain
    import sb3_cherry.envs  # noqa: F401  (registers DictReach)

    def build():
        return VecNormalize(make_vec_env("sb3_cherry/DictReach-v0", n_envs=2, seed=3), norm_obs_keys=["position"])

    kwargs = dict(n_steps=64, batch_size=64, n_epochs=1, seed=5)
    reference = PPORollback("MultiInputPolicy", build(), **kwargs).learn(512)
    first = PPORollback("MultiInputPolicy", build(), **kwargs)
    first.learn(512, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=128, stop_after=128))
    th.manual_seed(1234)
    np.random.seed(1234)
    model, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", build())
    assert state.envs_exact and state.num_timesteps == 128
    continue_run(model, state)
    for key, value in params(reference).items():
        assert th.equal(value, params(model)[key]), key
    ref_norm, new_norm = reference.get_vec_normalize_env(), model.get_vec_normalize_env()
    np.testing.assert_array_equal(ref_norm.obs_rms["position"].mean, new_norm.obs_rms["position"].mean)
    np.testing.assert_array_equal(ref_norm.ret_rms.var, new_norm.ret_rms.var)


class OpaqueVecWrapper(VecEnvWrapper):
    """A VecEnv wrapper holding state that is not plain data."""

    def __init__(self, venv):
        super().__init__(venv)
        self.handle = object()

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


def test_vec_layer_that_is_not_plain_data_is_a_value_error(tmp_path):
    # the VecEnv layers were encoded outside the try that catches _Unplain: it escaped save_run_checkpoint
    model = make_model(OpaqueVecWrapper(make_env(normalize=False)))
    model.learn(64)
    with pytest.raises(ValueError, match=r"OpaqueVecWrapper \(vec0\) holds handle \(object\).*without run checkpoints"):
        save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    assert not (tmp_path / "ckpt").exists()


def test_symlinked_checkpoint_folder_is_followed(tmp_path):
    # the swap renamed the link itself and made a real folder next to it; rmtree(ignore_errors) could not remove the
    # link then left in .ckpt.old, and the next save raised NotADirectoryError
    target = tmp_path / "storage" / "ckpt"
    target.mkdir(parents=True)
    link = tmp_path / "run" / "ckpt"
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    model = make_model(make_env(normalize=False))
    model.learn(64)
    save_run_checkpoint(model, link, total_timesteps=TOTAL)
    model.learn(64, reset_num_timesteps=False)
    # a stale .old left as a link (by the earlier code) is removed, not followed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "file").write_text("x")
    (target.parent / ".ckpt.old").symlink_to(kept, target_is_directory=True)
    save_run_checkpoint(model, link, total_timesteps=TOTAL)
    assert link.is_symlink() and sorted(p.name for p in link.parent.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt"] and (kept / "file").exists()
    assert has_run_checkpoint(link) and has_run_checkpoint(target)
    _, state = load_run_checkpoint(PPORollback, link, make_env(normalize=False))
    assert state.num_timesteps == model.num_timesteps == 256  # the second save
    with pytest.raises(ValueError, match="names no folder of its own"):
        save_run_checkpoint(model, tmp_path / "run" / "..", total_timesteps=TOTAL)


def _first(value, predicate):
    """The first dict inside ``value`` (JSON) for which ``predicate`` holds."""
    if isinstance(value, dict):
        if predicate(value):
            return value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _first(item, predicate)
            if found is not None:
                return found
    return None


def _set_generator_state(state):
    _first(state, lambda d: "__generator__" in d)["__generator__"] = {"bit_generator": "PCG64", "state": "x"}


CRAFTED_STATES = {
    "not an object": lambda state: [],
    "no algorithm": lambda state: state.pop("algorithm"),
    "total_timesteps a string": lambda state: state.update(total_timesteps="1024"),
    "env_layers a number": lambda state: state.update(env_layers=5),
    "scalar dtype": lambda state: state.update(ep_info_buffer=[{"__scalar__": 1, "dtype": "nonsense"}]),
    "deque maxlen": lambda state: state.update(ep_info_buffer=[{"__deque__": [], "maxlen": "x"}]),
    "generator state": _set_generator_state,
    "rng layout": lambda state: state.update(rng={"python": 5}),
    "dummy instance dict": lambda state: state["env_layers"][-1]["__dummy__"].update({"__dict__": {"__dict__": {}}}),
    "dummy method": lambda state: state["env_layers"][-1]["__dummy__"].update(step_async=1),
    "env method": lambda state: state["env_layers"][-1]["__envs__"][0][0].update(step=1),  # Monitor.step
    "env space": lambda state: state["env_layers"][-1]["__envs__"][0][0].update(observation_space=1),
    "env layer a list": lambda state: state["env_layers"][-1]["__envs__"][0].__setitem__(0, [1]),
}


@pytest.mark.parametrize("crafted", CRAFTED_STATES)
def test_crafted_run_state_is_a_value_error_naming_the_file(tmp_path, crafted):
    # damaged or crafted run_state.json: one ValueError naming the file (the CLI prints it as one line), not a
    # KeyError / TypeError / AttributeError traceback, nor an attribute set that the checkpoint never writes
    model = make_model(make_env(normalize=False))
    model.learn(64)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    state = json.loads((folder / "run_state.json").read_text())
    changed = CRAFTED_STATES[crafted](state)
    (folder / "run_state.json").write_text(json.dumps(changed if isinstance(changed, list) else state))
    with pytest.raises(ValueError, match=r"run_state\.json"):
        load_run_checkpoint(PPORollback, folder, make_env(normalize=False))


def test_truncated_run_state_names_the_file(tmp_path):
    model = make_model(make_env(normalize=False))
    model.learn(64)
    folder = save_run_checkpoint(model, tmp_path / "ckpt", total_timesteps=TOTAL)
    text = (folder / "run_state.json").read_text()
    (folder / "run_state.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"ckpt/run_state\.json is not valid JSON"):
        load_run_checkpoint(PPORollback, folder, make_env(normalize=False))


def linear_lr(progress_remaining: float) -> float:
    return 1e-3 * progress_remaining


def linear_clip(progress_remaining: float) -> float:
    return 0.1 + 0.2 * progress_remaining


def test_function_schedules_must_be_passed_again(tmp_path):
    # a schedule given as a function is stored only as a pickle: the safe load made it a constant (with a warning)
    # and the resumed run silently differed; now it must be passed again, and then the run continues exactly
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=2, seed=5, learning_rate=linear_lr, clip_range=linear_clip)
    reference = PPORollback("MlpPolicy", make_env(), **kwargs).learn(512)
    first = PPORollback("MlpPolicy", make_env(), **kwargs)
    first.learn(512, callback=RunCheckpointCallback(tmp_path / "ckpt", save_freq=128, stop_after=128))
    with pytest.raises(ValueError, match=r"clip_range, learning_rate as a function.*clip_range=schedule"):
        load_run_checkpoint(PPORollback, tmp_path / "ckpt", make_env())
    with pytest.raises(ValueError, match="clip_range as a function"):
        load_run_checkpoint(PPORollback, tmp_path / "ckpt", make_env(), learning_rate=linear_lr)
    for passed in (
        dict(learning_rate=linear_lr, clip_range=linear_clip),
        dict(custom_objects=dict(clip_range=linear_clip, learning_rate=linear_lr)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning about a constant replacing the schedule
            model, state = load_run_checkpoint(PPORollback, tmp_path / "ckpt", make_env(), **passed)
        continue_run(model, state)
        assert model.policy.optimizer.param_groups[0]["lr"] == reference.policy.optimizer.param_groups[0]["lr"]
        for key, value in params(reference).items():
            assert th.equal(value, params(model)[key]), key
