"""Steps scaled from the fitted one (log items 43, 44): the tool changes only what it says it does."""
import math

import pytest
import torch

pytest.importorskip("sklearn")
from bench.quality import long_steps  # noqa: E402
from bench.quality.run import run_one  # noqa: E402


def test_silver_schedule_follows_the_two_adic_valuation_and_its_cap():
    rho = 1 + math.sqrt(2)
    want = [1 + 1 / rho, 2, 1 + 1 / rho, 1 + rho, 1 + 1 / rho, 2, 1 + 1 / rho, 1 + rho ** 2]
    assert [long_steps.silver(t) for t in range(1, 9)] == pytest.approx(want)
    assert long_steps.silver(16) == long_steps.SILVER_CAP  # 1 + ρ³ ≈ 15.1, capped
    assert 1 + 1 / rho == pytest.approx(math.sqrt(2))


def test_scale_one_is_the_protocols_run_and_scale_two_is_not():
    ref = run_one(dict(task="digits_mlp", seed=0, method="qlab_sgd", lr=0.01, rule=None))
    assert long_steps.scaled_run("digits_mlp", "sgd", 0, "1") == ref["final_train_loss"]
    assert long_steps.scaled_run("digits_mlp", "sgd", 0, "2") != ref["final_train_loss"]


def test_horizon_branches_restart_from_one_state_and_the_unit_branch_is_the_run():
    """BatchNorm + dropout: the branches restore the model, the optimizer and the RNG stream, so
    the s = 1 branch run to the end is the protocol's run, bit for bit."""
    ref = run_one(dict(task="bn_dropout_mlp", seed=0, method="qlab_sgd", lr=0.01, rule=None))
    steps = ref["steps"]
    rel, start, final = long_steps.horizon("bn_dropout_mlp", "sgd", 0, ks=[5, steps - steps // 4])
    assert start == steps // 4 and final == ref["final_train_loss"]
    assert all(v[1.0] == (1.0, 1.0) for v in rel.values())
    assert rel[5][2.0] != (1.0, 1.0) and rel[5][0.5] != (1.0, 1.0)


def test_block_contrasts_compare_each_half_step_block_with_its_neighbours(monkeypatch):
    """With a made-up run whose batch losses are the step index (a linear trend) the contrasts are
    0, whatever the block length; a bump in the half-step blocks shows as a positive contrast."""
    class Fake:
        model = None

        def batches(self):
            return iter([(None, None)] * 40)

    t = iter(range(40))
    monkeypatch.setattr(long_steps, "_setup", lambda *a: (Fake(), [], None))
    monkeypatch.setattr(long_steps, "_step", lambda task, p, o, x, y, s: 100.0 + next(t))
    con = long_steps.block_contrasts("any", "sgd", 0, block=5)
    assert len(con) == 3 and all(abs(c) < 1e-12 for c in con)
    t = iter(range(40))
    monkeypatch.setattr(long_steps, "_step",
                        lambda task, p, o, x, y, s: 100.0 + next(t) + (5.0 if s == 0.5 else 0.0))
    con = long_steps.block_contrasts("any", "sgd", 0, block=5)
    assert all(c > 0.03 for c in con)


def test_scale_search_keeps_the_branch_with_the_lower_late_window_loss(monkeypatch):
    """A made-up run whose batch loss is the step scale itself: every window the smaller scale
    wins, so the kept scale halves at each 0.5 trial and stays at each 2 trial."""
    class Fake:
        model = type("M", (), {"state_dict": lambda self: {}, "load_state_dict": lambda self, d: None})()

        def batches(self):
            return iter([(None, None)] * 20)

        def train_loss(self, model):
            return 1.0

    opt = type("O", (), {"state_dict": lambda self: {}, "load_state_dict": lambda self, d: None})()
    monkeypatch.setattr(long_steps, "_setup", lambda *a: (Fake(), [], opt))
    monkeypatch.setattr(long_steps, "_step", lambda task, p, o, x, y, s: s)
    final, kept = long_steps.scale_search("any", "sgd", 0, block=4)
    assert final == 1.0 and kept == [0.5, 0.5, 0.25, 0.25, 0.125]


def test_scale_search_with_one_window_longer_than_the_run_is_the_protocols_run():
    ref = run_one(dict(task="digits_mlp", seed=0, method="qlab_sgd", lr=0.01, rule=None))
    final, kept = long_steps.scale_search("digits_mlp", "sgd", 0, block=10_000)
    assert kept == [] and final == ref["final_train_loss"]


def test_share_scaled_run_with_floor_one_is_the_protocols_run():
    """s = 1 throughout when the floor is 1: the extra forwards (the next batch at the old
    parameters, the own batch before and after at one dropout mask) leave the run as it was."""
    final, scale, share = long_steps.share_scaled_run("bn_dropout_mlp", "sgd", 0, floor=1.0)
    ref = run_one(dict(task="bn_dropout_mlp", seed=0, method="qlab_sgd", lr=0.01, rule=None))
    assert final == ref["final_train_loss"] and scale == 1.0 and math.isfinite(share)


def test_share_scaled_run_scales_by_the_share_over_r0_within_the_floor(monkeypatch):
    """With every frozen loss a made-up function of the step, the scale is clamp(share / r0)."""
    seen = []
    real_step = long_steps._step

    def step(task, params, opt, x, y, s):
        seen.append(s)
        return real_step(task, params, opt, x, y, s)

    monkeypatch.setattr(long_steps, "_step", step)
    final, scale, share = long_steps.share_scaled_run("digits_mlp", "sgd", 0, r0=1e9, floor=0.3)
    assert seen[:10] == [1.0] * 10  # no scale before step 10
    assert set(seen[11:]) == {0.3}  # any share over r0 = 1e9 is below the floor
    assert scale == 0.3 and math.isfinite(final)


def test_rule_option_reaches_the_optimizer(monkeypatch):
    """--rule (long_steps.RULE) builds the run's optimizer with that rule, not the default."""
    monkeypatch.setattr(long_steps, "RULE", "paper")
    assert long_steps._setup("digits_mlp", "adam", 0)[2].rule == "paper"
    monkeypatch.setattr(long_steps, "RULE", None)
    assert long_steps._setup("digits_mlp", "adam", 0)[2].rule != "paper"


def test_rel_steps_measure_the_protocols_runs_without_changing_them():
    """The default run and plain X's, measured step by step, end where the protocol's runs end,
    and each step's relative length is |Δθ|/|θ| of that step (plain SGD's first: lr·|G|/|θ|)."""
    for method, lr in (("qlab_sgd", None), ("sgd", 0.1)):
        ref = run_one(dict(task="digits_mlp", seed=0, method=method, lr=lr or 0.01, rule=None))
        final, rels = long_steps.rel_steps("digits_mlp", "sgd", 0, lr)
        assert final == ref["final_train_loss"] and len(rels) == ref["steps"]
        assert all(0 < r < 1 for r in rels)
    task, params, _ = long_steps._setup("digits_mlp", "sgd", 0)
    x, y = next(iter(task.batches()))
    grads = torch.autograd.grad(task.loss(task.model, x, y), params)
    by_hand = 0.1 * math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) / math.sqrt(
        sum(float(p.detach().pow(2).sum()) for p in params))
    assert rels[0] == pytest.approx(by_hand, rel=1e-5)


def test_cap_step_shortens_only_steps_longer_than_the_cap_and_keeps_their_direction():
    g = torch.Generator().manual_seed(3)
    before = [torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(4, generator=g,
                                                                               dtype=torch.float64)]
    step = [0.3 * torch.randn(b.shape, generator=g, dtype=torch.float64) for b in before]
    params = [b + d for b, d in zip(before, step)]
    rel = long_steps.rel_length(params, before)
    assert rel == pytest.approx(math.sqrt(sum(float(d.pow(2).sum()) for d in step))
                                / math.sqrt(sum(float(b.pow(2).sum()) for b in before)))
    kept = [p.clone() for p in params]
    assert not long_steps.cap_step(params, before, 1.01 * rel)
    assert all(torch.equal(p, k) for p, k in zip(params, kept))
    assert long_steps.cap_step(params, before, rel / 4)
    assert long_steps.rel_length(params, before) == pytest.approx(rel / 4, rel=1e-12)
    for p, b, d in zip(params, before, step):
        assert torch.allclose(p - b, d / 4, rtol=1e-12, atol=0)


def test_capped_run_with_no_step_over_the_cap_is_the_protocols_run():
    ref = run_one(dict(task="digits_mlp", seed=0, method="qlab_adam", lr=0.01, rule=None))
    final, shortened = long_steps.capped_run("digits_mlp", "adam", 0, math.inf)
    assert shortened == 0 and final == ref["final_train_loss"]
    final, shortened = long_steps.capped_run("digits_mlp", "adam", 0, 1e-4)
    assert shortened == ref["steps"] and final != ref["final_train_loss"]


def test_relcap_command_prints_the_ratio_and_how_many_steps_were_shortened(capsys):
    long_steps.main(["relcap", "--task", "digits_mlp", "--base", "sgd", "--caps", "1e9,1e-4"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].endswith(" 0 steps shortened")
    assert not out[1].endswith(" 0 steps shortened")
