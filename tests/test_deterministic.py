"""Same seed, same result."""

import numpy as np
import pytest
import torch as th

from sb3_cherry import CherryA2C, PPORollback


@pytest.mark.parametrize("algo", [PPORollback, CherryA2C])
@pytest.mark.parametrize("distribution", [None, "beta", "tanh_normal"])
def test_deterministic_training(algo, distribution):
    kwargs = dict(n_steps=32, batch_size=32, n_epochs=2) if algo is PPORollback else dict(n_steps=8)
    results = []
    for _ in range(2):
        model = algo("MlpPolicy", "Pendulum-v1", seed=1, policy_kwargs=dict(action_distribution=distribution), **kwargs)
        model.learn(96)
        results.append(th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy())
    np.testing.assert_array_equal(results[0], results[1])
