"""benchmarks/bipedal_diagnosis.py: its Beta statistics against torch's Beta, and a short run end to end."""

import csv

import numpy as np
import torch as th
import torch.nn.functional as F

from benchmarks import bipedal_diagnosis
from benchmarks.learning import build_model


def test_beta_statistics_and_mean_action_match_torch_beta():
    model, _ = build_model("ppo_rollback", "BipedalWalker-v3", 0, [])
    policy = model.policy
    with th.no_grad():
        for p in policy.action_net.parameters():  # away from the near-zero initial output
            p.normal_(0.0, 0.5)
    obs = th.randn(64, 24)
    # independent reference: the Beta's parameters written out from the network, torch's Beta for mean and entropy
    with th.no_grad():
        latent = policy.mlp_extractor.forward_actor(policy.extract_features(obs, policy.pi_features_extractor))
        raw = policy.action_net(latent)
        alpha, beta = F.softplus(raw[:, :4]) + 1.0, F.softplus(raw[:, 4:]) + 1.0
        reference = th.distributions.Beta(alpha, beta)
    stats = bipedal_diagnosis.beta_statistics(model, obs)
    for i in range(4):
        assert np.isclose(stats[f"conc_d{i}"], float((alpha[:, i] + beta[:, i]).mean()), rtol=1e-5)
        mode = -1.0 + 2.0 * (alpha[:, i] - 1.0) / (alpha[:, i] + beta[:, i] - 2.0)  # bounds [-1, 1]
        assert np.isclose(stats[f"mode_mean_d{i}"], float(mode.mean()), atol=1e-5)
    # entropy on [-1, 1]: the unit Beta's plus log 2 per dimension
    assert np.isclose(stats["entropy"], float((reference.entropy() + np.log(2.0)).sum(dim=1).mean()), atol=1e-5)
    actions, _ = bipedal_diagnosis.BetaMeanPredictor(model).predict(obs.numpy())
    np.testing.assert_allclose(actions, (-1.0 + 2.0 * reference.mean).numpy(), atol=1e-6)
    model.get_env().close()


def test_short_run_writes_the_diagnosis_and_decays_the_entropy_bonus(tmp_path):
    args = ["--timesteps", "1024", "--eval-freq", "100000", "--log-every", "1", "--results", str(tmp_path)]
    args += ["--variant", "smoke", "--set", "ent_coef=0.004", "--ent-decay-steps", "1024"]
    model = bipedal_diagnosis.main(args)
    assert model.ent_coef == 0.0  # decayed linearly from 0.004 to 0 at step 1024
    with open(tmp_path / "diag_smoke_s0.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["timesteps"]) for row in rows] == [512, 1024]
    for key in ("conc_d3", "mode_sat_d0", "act_std_d1", "grad_pi", "grad_scale", "ret_rms_var", "ep_fall"):
        assert key in rows[0]
    assert float(rows[1]["clip_fraction"]) >= 0.0  # the first update's logger value, read after the next rollout
    with open(tmp_path / "BipedalWalker-v3.csv", newline="") as file:
        variants = [(row["variant"], row["timesteps"]) for row in csv.DictReader(file)]
    assert variants == [("smoke", "0"), ("smoke@mean", "0"), ("smoke", "1024"), ("smoke@mean", "1024")]
    assert "steps_to" in bipedal_diagnosis.summarize(tmp_path, "smoke_s0", bin_steps=512)
    bipedal_diagnosis.plot(tmp_path, ["smoke_s0"], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
