"""
Collection that overlaps learning: the gradient updates run in a learner process while the main process keeps
collecting the next rollout with the previous weights.

Timeline (``C_i``: collect rollout ``i`` in the main process, ``T_i``: train on it in the learner)::

    main:     C_0 | C_1 (weights v0)  | C_2 (weights v1)  | ...
    learner:      | T_0: v0 -> v1     | T_1: v1 -> v2     | ...

The behaviour policy ``mu`` of rollout ``i`` (``i >= 1``) is therefore exactly one update older than the weights
``pi_prox`` the learner starts from. Before the update, the learner corrects the rollout as decoupled PPO does (Hilton
et al., 2021, eq. 3; reference code openai/ppo-ewma; :meth:`~sb3_cherry.common.buffers.ReturnsEstimatorMixin.recentre`):
PPO's (and the rollback's) ratio and trust region are centred on ``pi_prox`` instead of ``mu`` (otherwise the first
epoch would already sit outside the trust region, and the rollback would push the policy back towards ``mu``), value
clipping is centred on ``pi_prox``'s critic, and each sample carries the importance weight ``pi_prox / mu``, which
multiplies its surrogate (``-w A log pi`` for A2C) after the minibatch's advantages are normalised, truncated as in
the reference code: the whole ratio ``pi / mu`` is capped at ``imp_samp_max``, i.e. ``w = min(pi_prox / mu,
imp_samp_max * pi_prox / pi)`` (:func:`~sb3_cherry.common.buffers.truncated_weights`; ``pi = pi_prox`` for A2C).
With ``returns_estimator="vtrace"``, the critic's targets are recomputed with ``pi_prox``'s critic and the V-trace
ratios ``pi_prox / mu`` (with ``recompute_returns=True``: before every epoch, ratios ``pi / mu``); the surrogate then
takes the advantages without ``rho`` (``w`` times PPO's ratio ``pi / pi_prox`` already is the importance weight
``pi / mu``).

What crosses the process boundary, per update: the rollout (arrays of the rollout buffer, sent once through a pipe) to
the learner; the new policy weights back through a ``multiprocessing.shared_memory`` block (written in place by the
learner, copied into the main policy once per update, never pickled); the ``train/`` log values (a small dict).
The optimizer state stays in the learner and is copied back once, when ``learn`` ends.
"""

import io
import multiprocessing as mp
import os
import sys
import traceback
import warnings
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_cherry.common.speed import training_switches

COLLECTION_MODES = ("sync", "async")
# rollout buffer fields that are not per-step data
_BUFFER_SCALARS = ("pos", "full", "generator_ready")


def check_collection(collection: str) -> str:
    """
    Validate the ``collection`` argument of the on-policy algorithms.

    :param collection: ``"sync"`` or ``"async"``
    :return: the value
    :raises ValueError: any other value
    """
    if collection not in COLLECTION_MODES:
        raise ValueError(
            f"collection={collection!r} is not supported: use 'sync' (collect then train, as SB3) or 'async' "
            "(train in a learner process while the next rollout is collected)."
        )
    return collection


def _has_main_guard(path: str) -> bool:
    """Whether the script at ``path`` has a top-level ``if __name__ == "__main__":`` block."""
    import ast

    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), filename=path)
    for node in tree.body:
        if not isinstance(node, ast.If):
            continue
        # ``__name__ == "__main__"`` alone or inside a condition (``... and len(sys.argv) > 1``)
        for test in ast.walk(node.test):
            if isinstance(test, ast.Compare):
                names = [test.left, *test.comparators]
                if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                    isinstance(n, ast.Constant) and n.value == "__main__" for n in names
                ):
                    return True
    return False


def _check_rebuildable(model: Any) -> None:
    """
    The learner process rebuilds the policy from ``policy_class`` / ``policy_kwargs`` (``model.save`` / ``load``):
    refuse a ``model.policy`` replaced by one they do not build (collection="sync" trains it in place).

    :param model: the algorithm
    :raises ValueError: naming the difference
    """
    policy = model.policy
    if type(policy) is not model.policy_class:
        raise ValueError(
            f"model.policy is a {type(policy).__name__}, but policy_class is {getattr(model.policy_class, '__name__', '?')}: "
            "collection='async' rebuilds the policy in its learner process from policy_class / policy_kwargs. Set "
            "them to build your policy, or use collection='sync'."
        )
    with th.random.fork_rng(devices=[]):  # (its initialisation must not move the run's random stream)
        fresh = model.policy_class(model.observation_space, model.action_space, model.lr_schedule, **model.policy_kwargs)
    ours = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    built = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if ours != built:
        differ = sorted(set(ours.items()) ^ set(built.items()))[:3]
        raise ValueError(
            f"model.policy does not have the layout policy_kwargs build ({differ} ...): collection='async' rebuilds the "
            "policy in its learner process from policy_class / policy_kwargs. Set them to build your policy, or use "
            "collection='sync'."
        )


def check_main_guard(start_method: str) -> None:
    """
    Refuse to start the learner process when doing so would re-run the user's script.

    With the ``spawn`` and ``forkserver`` start methods, a new process imports the main script again; without an
    ``if __name__ == "__main__":`` guard, that re-runs the training (and its saves) in the child.

    :param start_method: the multiprocessing start method
    :raises RuntimeError: we are inside such a re-import, or the main script has no guard
    """
    if start_method == "fork":
        return
    advice = (
        'collection="async" starts a learner process, which re-imports the main script: put the script\'s code under '
        '`if __name__ == "__main__":` (see the README example), or use collection="sync".'
    )
    if getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(f"learn() was called while a child process imported the main script. {advice}")
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path and path.endswith(".py") and os.path.isfile(path) and not _has_main_guard(path):
        raise RuntimeError(f'{path} has no `if __name__ == "__main__":` guard. {advice}')


class SharedStateDict:
    """
    The floating point tensors of a ``state_dict`` laid out in one ``multiprocessing.shared_memory`` block.

    :param layout: ``(name, dtype, shape, offset)`` per tensor
    :param name: name of an existing block to attach to (``None``: create one)
    """

    def __init__(self, layout: list[tuple[str, str, tuple[int, ...], int]], name: str | None = None):
        self.layout = layout
        size = max([1] + [offset + np.dtype(dtype).itemsize * int(np.prod(shape)) for _, dtype, shape, offset in layout])
        self.shm = SharedMemory(name=name, create=name is None, size=size)
        self.owner = name is None
        self.arrays = {
            key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=self.shm.buf, offset=offset)
            for key, dtype, shape, offset in layout
        }

    @staticmethod
    def layout_of(state_dict: dict[str, th.Tensor]) -> list[tuple[str, str, tuple[int, ...], int]]:
        """
        Byte layout of the tensors of a state dict.

        :param state_dict: a module's ``state_dict()`` (CPU tensors)
        :return: ``(name, numpy dtype string, shape, byte offset)`` per tensor, 8-byte aligned
        """
        layout, offset = [], 0
        for key, tensor in state_dict.items():
            array = tensor.detach().cpu().numpy()
            layout.append((key, array.dtype.str, tuple(array.shape), offset))
            offset += -(-array.nbytes // 8) * 8
        return layout

    def write(self, state_dict: dict[str, th.Tensor]) -> None:
        """
        Copy the tensors into shared memory.

        :param state_dict: tensors with the layout's names and shapes
        """
        for key, array in self.arrays.items():
            array[...] = state_dict[key].detach().cpu().numpy()

    def read_into(self, module: th.nn.Module) -> None:
        """
        Copy the shared tensors into a module's parameters and buffers, in place.

        :param module: module with the layout's ``state_dict`` names
        """
        state = module.state_dict()
        if any(key not in state or tuple(state[key].shape) != array.shape for key, array in self.arrays.items()):
            raise RuntimeError(
                "model.policy was replaced by a policy of another layout during an async learn: the learner trains "
                "the policy learn started with. Replace it between learn calls (with policy_class / policy_kwargs "
                "that build it), or use collection='sync'."
            )
        with th.no_grad():
            for key, array in self.arrays.items():
                state[key].copy_(th.from_numpy(array))

    def close(self) -> None:
        """Detach (and free, in the process that created it) the shared block."""
        self.arrays = {}
        self.shm.close()
        if self.owner:
            self.shm.unlink()


def buffer_payload(buffer: RolloutBuffer) -> dict[str, Any]:
    """
    The data of a filled rollout buffer: its numpy arrays (and dicts of arrays) and position flags.

    :param buffer: a full rollout buffer (after ``compute_returns_and_advantage``)
    :return: picklable dict of attributes
    """
    payload = {
        key: value
        for key, value in vars(buffer).items()
        if isinstance(value, np.ndarray)
        or (isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()))
    }
    payload.update({key: getattr(buffer, key) for key in _BUFFER_SCALARS})
    return payload


def _learner_main(conn: Connection, model_bytes: bytes, shm_name: str, layout: list, threads: int) -> None:
    """
    Entry point of the learner process: rebuild the model, then train on every rollout received.

    :param conn: pipe to the main process
    :param model_bytes: the model saved with ``model.save`` (policy, optimizer state, hyperparameters)
    :param shm_name: shared memory block for the weights
    :param layout: its layout (see :class:`SharedStateDict`)
    :param threads: torch threads of the learner
    """
    shared = None
    try:
        th.set_num_threads(threads)
        model_class, device = conn.recv()
        model = model_class.load(io.BytesIO(model_bytes), env=None, device=device, allow_pickle=True)  # our own bytes
        logger = Logger(folder=None, output_formats=[])
        model.set_logger(logger)
        shared = SharedStateDict(layout, name=shm_name)
        conn.send(("ready", None))
        while True:
            command, data = conn.recv()
            if command == "close":
                break
            if command == "optimizer":
                state = io.BytesIO()
                th.save(model.policy.optimizer.state_dict(), state)
                conn.send(("optimizer", state.getvalue()))
                continue
            buffer = model.rollout_buffer
            buffer.behaviour_log_probs, buffer.advantage_weights = None, None
            for key, value in data["buffer"].items():
                setattr(buffer, key, value)
            model._last_obs = data["last_obs"]
            model.num_timesteps = data["num_timesteps"]
            model._current_progress_remaining = data["progress_remaining"]
            with training_switches(model):  # as the main process's learn (no argument validation, foreach)
                if data["lagged"]:
                    # collected by the previous weights: centre the trust region on the current policy, store the
                    # per-sample importance weights, and (recompute_returns) re-evaluate the targets before the first
                    # epoch
                    model._prepare_lagged_rollout()
                    model._recompute_returns()
                model.train()
            shared.write(model.policy.state_dict())
            logs = {key: (logger.name_to_value[key], logger.name_to_excluded.get(key)) for key in logger.name_to_value}
            logger.name_to_value.clear()
            logger.name_to_excluded.clear()
            conn.send(("trained", {"logs": logs, "n_updates": model._n_updates}))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if shared is not None:
            shared.close()
        conn.close()


class AsyncLearner:
    """
    Learner process of an on-policy model with ``collection="async"`` (see the module docstring).

    :param model: the model (its current policy, optimizer state and hyperparameters are copied to the learner)
    :param threads: torch threads of the learner process (default: half of the main process's, at least 1)
    :param timeout: seconds to wait for one update before reporting the learner as stuck
    :param start_method: multiprocessing start method (default: ``forkserver`` where available, else ``spawn``,
        as SB3's ``SubprocVecEnv``)
    """

    def __init__(
        self,
        model: OnPolicyAlgorithm,
        threads: int | None = None,
        timeout: float = 3600.0,
        start_method: str | None = None,
    ):
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        check_main_guard(start_method)
        ctx: Any = mp.get_context(start_method)
        self.timeout = timeout
        self.pending = False
        self.submitted = 0
        _check_rebuildable(model)
        layout = SharedStateDict.layout_of(model.policy.state_dict())
        self.shared = SharedStateDict(layout)
        self.conn, child_conn = ctx.Pipe()
        self.process: Any = None
        try:  # whatever fails (saving the model, starting the process, its start-up), nothing is left behind
            buffer = io.BytesIO()
            model.save(buffer)
            threads = threads if threads is not None else max(1, th.get_num_threads() // 2)
            self.process = ctx.Process(
                target=_learner_main,
                args=(child_conn, buffer.getvalue(), self.shared.shm.name, layout, threads),
                daemon=True,
                name="sb3_cherry-learner",
            )
            self.process.start()
            child_conn.close()
            self._send((type(model), str(model.device)), "ready")
            self._receive("ready")
        except BaseException:
            child_conn.close()
            self.close()
            raise

    def _lost(self, expected: str) -> RuntimeError:
        """The error reported when the pipe to the learner breaks."""
        self.process.join(timeout=1.0)
        return RuntimeError(
            f"The async learner process closed its pipe (exit code {self.process.exitcode}) before {expected!r}: "
            "killed or out of memory? Retry with collection='sync' to see any error in-process."
            + (
                ' If the script calls learn() outside `if __name__ == "__main__":`, the learner process re-ran it: '
                "move that code under the guard."
                if expected == "ready"
                else ""
            )
        )

    def _send(self, message: tuple[Any, Any], expected: str) -> None:
        """Send a command to the learner, reporting a dead learner instead of a broken pipe."""
        try:
            self.conn.send(message)
        except OSError as exc:  # BrokenPipeError / ConnectionResetError
            raise self._lost(expected) from exc

    def _receive(self, expected: str) -> Any:
        """Wait for the learner's answer, reporting its death, its errors or a timeout instead of hanging."""
        waited = 0.0
        while not self.conn.poll(1.0):
            waited += 1.0
            if not self.process.is_alive():
                raise RuntimeError(
                    f"The async learner process died (exit code {self.process.exitcode}) before answering "
                    f"{expected!r}: out of memory or killed? Retry with collection='sync' to see the error in-process."
                )
            if waited >= self.timeout:
                raise RuntimeError(f"The async learner process did not answer {expected!r} within {self.timeout:.0f} s.")
        try:
            kind, data = self.conn.recv()
        except (EOFError, OSError) as exc:  # OSError: ConnectionResetError when the learner was killed mid-write
            raise self._lost(expected) from exc
        if kind == "error":
            raise RuntimeError(f"The async learner process failed:\n{data}")
        assert kind == expected, (kind, expected)
        return data

    def submit(self, model: OnPolicyAlgorithm) -> None:
        """
        Send the model's filled rollout buffer to the learner, which starts training on it.

        :param model: the model whose ``rollout_buffer`` was just collected
        """
        assert not self.pending, "wait for the previous update (sync) before submitting a new rollout"
        data = {
            "buffer": buffer_payload(model.rollout_buffer),
            "last_obs": model._last_obs,
            "num_timesteps": model.num_timesteps,
            "progress_remaining": model._current_progress_remaining,
            # every rollout but the first was collected while the learner computed the weights it now starts from
            "lagged": self.submitted > 0,
        }
        self._send(("train", data), "trained")
        self.pending = True
        self.submitted += 1

    def sync(self, model: OnPolicyAlgorithm) -> None:
        """
        Wait for the update in progress (if any), then copy its weights into the model's policy and record its logs.

        :param model: the model to update
        """
        if not self.pending:
            return
        result = self._receive("trained")
        self.pending = False
        self.shared.read_into(model.policy)
        model._n_updates = result["n_updates"]
        for key, (value, exclude) in result["logs"].items():
            model.logger.record(key, value, exclude=exclude)

    def finish(self, model: OnPolicyAlgorithm) -> None:
        """
        Wait for the last update and copy the learner's weights and optimizer state into the model.

        :param model: the model to update
        """
        self.sync(model)
        self._send(("optimizer", None), "optimizer")
        state = th.load(io.BytesIO(self._receive("optimizer")), map_location=model.device, weights_only=True)
        model.policy.optimizer.load_state_dict(state)

    def salvage(self, model: OnPolicyAlgorithm) -> None:
        """
        After ``learn`` failed or was interrupted: give the model the learner's last weights and their optimizer state
        (the model holds the behaviour weights, one update behind, and the optimizer state from the start of
        ``learn``), so that saving it pairs weights and optimizer state. Warns if the learner is gone (e.g. it received
        the same Ctrl-C).

        :param model: the model being trained
        """
        try:
            if self.process is None or not self.process.is_alive():
                raise RuntimeError("the learner process has exited")
            self.finish(model)
        except Exception as exc:
            warnings.warn(
                f"collection='async': learn stopped and the learner's state could not be fetched ({exc}): the model "
                "holds the weights of the last update received and the optimizer state from the start of this learn "
                "call.",
                stacklevel=3,
            )

    def close(self) -> None:
        """Stop the learner process and free the shared memory (safe to call twice)."""
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=5)
        self.conn.close()
        if self.shared.arrays:
            self.shared.close()
