"""
``sb3_cherry/HybridGoal-v0``: a parameterized-action ("choose a tool and how hard to use it") task.

A small golf hole. Each step the agent picks a club (the discrete part of the action) and the parameter of that club (the
continuous part); the parameters of the other clubs are ignored.

Action space ``Tuple(Discrete(3), Tuple(Box_putt, Box_chip, Box_drive))``:

====  =======  ===============================  ===================================================================
id    club     parameter space                  effect (the hole is at the origin, ``v`` = ball-to-hole vector)
====  =======  ===============================  ===================================================================
0     putt     ``Box(-1, 1, (2,))``             ball moves by ``0.5 * a``, ``a`` first projected onto the unit disc
1     chip     ``Box(-1, 1, (1,))``             ball flies exactly ``1.5 * (p + 1)`` in ``[0, 3]`` towards the hole
2     drive    ``Box(0, 2, (1,))``              ball flies ``4 * p`` in ``[0, 8]`` towards the hole, with noise:
                                                distance x ``U(0.8, 1.2)``, direction rotated by ``U(-0.2, 0.2)`` rad
====  =======  ===============================  ===================================================================

Parameters outside their box are clipped. The putt is the only club that can hole the ball: it is holed when a putt
stops within 0.15 of the hole. The ball starts 5 to 9 away from the hole in a uniformly random direction and stays on
the course ``[-10, 10]^2`` (clipped).

Observation ``Box(5,)`` float32: ``[vx / 10, vy / 10, |v| / 10, clip(vx / 0.5, -1, 1), clip(vy / 0.5, -1, 1)]``, a far
view of the ball-to-hole vector and a near ("green") view in putt units.

Reward per stroke: ``-1 + (|v_before| - |v_after|)``, i.e. minus one per stroke plus the distance gained (potential
shaping, which does not change the optimal policy). The episode terminates when the ball is holed and is truncated after
20 strokes (registered ``max_episode_steps``), so an episode's return is ``(d_0 - d_final) - strokes``: at most
``E[d_0] - 2 = 5`` on average, since at least one long shot and one putt are needed.

Why it needs both action components: the drive is the only way to cover distance quickly but is too imprecise to finish,
the chip is precise but short, and only an aimed putt holes the ball. ``expert_action`` drives (``p = d / 4``) from
beyond 3.65, chips (``p = d / 1.5 - 1``, clipped) from within 3.65, and putts (``a = v / 0.5``) from within 0.65.

Measured returns (seeds 0..1999, or 0..999 for the value-iteration policies; strokes per episode in the last column):

=====================================================================  ===========  =======
policy                                                                  mean return  strokes
=====================================================================  ===========  =======
uniformly random actions (``action_space.sample()``, 5 % holed)         -14.7        19.6
always putt with the centre parameter ``(0, 0)`` (never moves)         -20.0        20
always chip with the centre parameter ``0`` (never holes)               -13.7        20
always drive with the centre parameter ``1`` (never holes)              -14.9        20
best discrete-only policy, random parameters (value iteration)         -9.4         16.0
best single club with optimal parameters (putt only, ``a = v / 0.5``)   -7.2         14.2
best discrete-only policy, centre parameters (value iteration: chip     -0.9         7.9
and drive until the ball happens to stop within 0.15, then tap in)
``expert_action`` (equal to the value-iteration optimum, 4.21)           4.19         2.8
=====================================================================  ===========  =======

The "value iteration" rows are the best policies over the ball-to-hole distance found by finite-horizon value iteration
(the task is rotation invariant), then run in this environment. The registered ``reward_threshold`` is 2.0, three points
above the best discrete-only policy: a hybrid-action PPO (Categorical x diagonal Gaussians, log-probs summed over all
components, 8 envs x 64 steps, batch 128, 10 epochs, lr 1e-3, gamma 0.99, GAE 0.95, clip 0.2, 64x64 tanh networks) has a
mean training return of 2.1 / 3.5 / 2.4 after 49k steps and 3.3 / 4.0 / 3.4 after 98k steps (3 seeds); with lr 3e-4 it
needs ~90-100k steps.
"""

from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_cherry.envs._drawing import blank_canvas, draw_disc

PUTT, CHIP, DRIVE = 0, 1, 2
CLUB_NAMES = ("putt", "chip", "drive")


def expert_action(observation: np.ndarray) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """
    Near-optimal controller for ``HybridGoal-v0`` (see the module docstring), e.g. to record demonstrations.

    :param observation: an observation of ``HybridGoalEnv``
    :return: an action ``(club, (putt_params, chip_params, drive_params))``; the unused parameters are the box centres
    """
    env = HybridGoalEnv
    to_hole = np.asarray(observation[:2], dtype=np.float64) * env.COURSE
    distance = float(observation[2]) * env.COURSE
    putt = np.zeros(2, dtype=np.float32)
    chip = np.zeros(1, dtype=np.float32)
    drive = np.ones(1, dtype=np.float32)
    if distance <= env.PUTT_RANGE + env.HOLE_RADIUS:
        club = PUTT
        putt[:] = to_hole / max(distance, env.PUTT_RANGE)  # full strength towards the hole, or exactly into it
    elif distance <= env.CHIP_RANGE + env.PUTT_RANGE + env.HOLE_RADIUS:
        club = CHIP
        chip[0] = np.clip(distance / (env.CHIP_RANGE / 2) - 1.0, -1.0, 1.0)
    else:
        club = DRIVE
        drive[0] = np.clip(distance / (env.DRIVE_RANGE / 2), 0.0, 2.0)
    return club, (putt, chip, drive)


def _parameter_boxes(action_space: spaces.Tuple) -> tuple[spaces.Box, ...]:
    """
    The per-club parameter Boxes of a HybridGoal action space ``(club, (putt, chip, drive))``.

    :param action_space: the env's action space
    :return: the putt, chip and drive Boxes
    """
    return cast(tuple[spaces.Box, ...], cast(spaces.Tuple, action_space.spaces[1]).spaces)


class HybridGoalEnv(gym.Env):
    """
    Golf with a club choice (discrete) and a per-club stroke parameter (continuous), see the module docstring.

    :param render_mode: ``None`` or ``"rgb_array"`` (a top view of the course)
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_space: spaces.Tuple
    observation_space: spaces.Box

    COURSE = 10.0  # the course is [-COURSE, COURSE]^2, hole at the origin
    HOLE_RADIUS = 0.15
    PUTT_RANGE = 0.5
    CHIP_RANGE = 3.0
    DRIVE_RANGE = 8.0
    DRIVE_DISTANCE_NOISE = 0.2  # relative
    DRIVE_ANGLE_NOISE = 0.2  # radians
    START_DISTANCE = (5.0, 9.0)

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Unsupported render_mode {render_mode!r}: use one of {self.metadata['render_modes']} or None.")
        self.render_mode = render_mode
        self.action_space = spaces.Tuple(
            (
                spaces.Discrete(3),
                spaces.Tuple(
                    (
                        spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),  # putt: aim and strength
                        spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),  # chip: distance
                        spaces.Box(0.0, 2.0, shape=(1,), dtype=np.float32),  # drive: power
                    )
                ),
            )
        )
        high = np.array([1.0, 1.0, np.sqrt(2.0), 1.0, 1.0], dtype=np.float32)
        low = np.array([-1.0, -1.0, 0.0, -1.0, -1.0], dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._ball = np.zeros(2)
        self._strokes = 0

    def _get_obs(self) -> np.ndarray:
        to_hole = -self._ball
        distance = float(np.linalg.norm(to_hole))
        near = np.clip(to_hole / self.PUTT_RANGE, -1.0, 1.0)
        obs = np.concatenate([to_hole / self.COURSE, [distance / self.COURSE], near]).astype(np.float32)
        return np.clip(obs, self.observation_space.low, self.observation_space.high)

    def _get_info(self, club: int | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"distance": float(np.linalg.norm(self._ball)), "strokes": self._strokes}
        if club is not None:
            info["club"] = CLUB_NAMES[club]
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Put the ball 5 to 9 away from the hole, in a random direction.

        :param seed: seed of ``self.np_random``
        :param options: unused
        :return: observation and info (``distance``, ``strokes``)
        """
        super().reset(seed=seed)
        distance = self.np_random.uniform(*self.START_DISTANCE)
        angle = self.np_random.uniform(-np.pi, np.pi)
        self._ball = distance * np.array([np.cos(angle), np.sin(angle)])
        self._strokes = 0
        return self._get_obs(), self._get_info()

    def _parse_action(self, action: Any) -> tuple[int, np.ndarray]:
        """
        :param action: ``(club, (putt_params, chip_params, drive_params))``
        :return: the club and its parameters, flat float64 (checked against this env's parameter Box's size)
        :raises ValueError: a malformed action, a club that is not 0, 1 or 2, parameters of the wrong size
        """
        try:
            club_part, params = action
            club_value = float(np.asarray(club_part).reshape(-1)[0])
            club = int(club_value)
        except (TypeError, ValueError, IndexError) as error:
            raise ValueError(
                f"HybridGoal expects an action (club, (putt_params, chip_params, drive_params)), got {action!r}."
            ) from error
        if club != club_value or not 0 <= club < 3:
            raise ValueError(
                f"Club index {club_value} is out of range or not an integer: use 0 (putt), 1 (chip) or 2 (drive)."
            )
        try:
            param = np.asarray(params[club], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, IndexError) as error:
            raise ValueError(f"HybridGoal: no numeric parameters for club {club} in {action!r}.") from error
        expected = _parameter_boxes(self.action_space)[club].shape
        if param.size != int(np.prod(expected)):
            raise ValueError(
                f"HybridGoal: club {club}'s parameters must have shape {expected}, got {np.shape(params[club])} "
                f"({params[club]!r}): pass one array per club, as action_space.sample() does."
            )
        return club, param

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        Play one stroke.

        :param action: ``(club, (putt_params, chip_params, drive_params))``; only ``params[club]`` is used
        :return: observation, reward, terminated (holed), truncated (always ``False``; the time limit is a wrapper), info
        """
        club, param = self._parse_action(action)
        distance_before = float(np.linalg.norm(self._ball))
        direction = -self._ball / distance_before if distance_before > 0 else np.array([1.0, 0.0])

        if club == PUTT:
            aim = np.clip(param[:2], -1.0, 1.0)
            norm = float(np.linalg.norm(aim))
            if norm > 1.0:
                aim = aim / norm
            ball = self._ball + self.PUTT_RANGE * aim
        elif club == CHIP:
            flight = self.CHIP_RANGE * (float(np.clip(param[0], -1.0, 1.0)) + 1.0) / 2.0
            ball = self._ball + flight * direction
        else:
            flight = self.DRIVE_RANGE * float(np.clip(param[0], 0.0, 2.0)) / 2.0
            flight *= 1.0 + self.DRIVE_DISTANCE_NOISE * self.np_random.uniform(-1.0, 1.0)
            angle = np.arctan2(direction[1], direction[0]) + self.DRIVE_ANGLE_NOISE * self.np_random.uniform(-1.0, 1.0)
            ball = self._ball + flight * np.array([np.cos(angle), np.sin(angle)])

        self._ball = np.clip(ball, -self.COURSE, self.COURSE)
        self._strokes += 1
        distance_after = float(np.linalg.norm(self._ball))
        holed = club == PUTT and distance_after <= self.HOLE_RADIUS
        reward = -1.0 + (distance_before - distance_after)
        info = self._get_info(club)
        info["holed"] = holed
        return self._get_obs(), reward, holed, False, info

    def render(self) -> np.ndarray | None:
        """
        Top view of the course: green grass, black hole, white ball.

        :return: a ``(128, 128, 3)`` uint8 image when ``render_mode="rgb_array"``, else ``None``
        """
        if self.render_mode != "rgb_array":
            return None
        size = 128
        scale = size / (2 * self.COURSE)
        canvas = blank_canvas(size, (40, 140, 40))
        centre = size / 2
        draw_disc(canvas, centre, centre, self.HOLE_RADIUS * scale * 3, (0, 0, 0))
        draw_disc(canvas, centre - self._ball[1] * scale, centre + self._ball[0] * scale, 2.0, (255, 255, 255))
        return canvas


class HybridGoalUnscaledEnv(HybridGoalEnv):
    """
    ``sb3_cherry/HybridGoalUnscaled-v0``: :class:`HybridGoalEnv` with each club's parameter in its own unscaled units.

    The same task, dynamics, rewards and optimum; only the parameter Boxes change, to ranges of very different sizes,
    as in third-party parameterized-action domains whose parameters are physical quantities:

    ====  =======  ==========================  ================================================
    id    club     parameter space             mapped affinely onto HybridGoal-v0's parameter
    ====  =======  ==========================  ================================================
    0     putt     ``Box(-5, 5, (2,))``        ``Box(-1, 1, (2,))``
    1     chip     ``Box(0, 0.1, (1,))``       ``Box(-1, 1, (1,))``
    2     drive    ``Box(0, 700, (1,))``       ``Box(0, 2, (1,))``
    ====  =======  ==========================  ================================================

    A distribution that ignores the bounds (SB3's Gaussian: mean 0, std 1, clipped) covers the putt range, lands on the
    bounds of the chip range and drives at most a few thousandths of the drive range; ``benchmarks/hybrid_ranges.py``
    compares the action distributions on it.

    :param render_mode: ``None`` or ``"rgb_array"`` (a top view of the course)
    """

    #: (low, high, size) of the putt, chip and drive parameter Boxes
    PARAMETER_RANGES: ClassVar[tuple[tuple[float, float, int], ...]] = ((-5.0, 5.0, 2), (0.0, 0.1, 1), (0.0, 700.0, 1))

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self._base_parameter_spaces = _parameter_boxes(self.action_space)
        self.action_space = spaces.Tuple(
            (
                spaces.Discrete(3),
                spaces.Tuple(
                    tuple(spaces.Box(low, high, shape=(size,), dtype=np.float32) for low, high, size in self.PARAMETER_RANGES)
                ),
            )
        )

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        Play one stroke: the chosen club's parameter is mapped onto HybridGoal-v0's range, then played there.

        :param action: ``(club, (putt_params, chip_params, drive_params))`` in this env's units; only ``params[club]``
            is used
        :return: observation, reward, terminated (holed), truncated (always ``False``; the time limit is a wrapper), info
        """
        club, raw_param = self._parse_action(action)
        unscaled, base = _parameter_boxes(self.action_space)[club], self._base_parameter_spaces[club]
        unit = (raw_param - unscaled.low) / (unscaled.high - unscaled.low)
        params = [space.low for space in self._base_parameter_spaces]  # the other clubs' parameters are ignored
        params[club] = base.low + unit * (base.high - base.low)
        return super().step((club, tuple(params)))
