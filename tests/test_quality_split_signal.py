"""The split-half signal fraction (log item 43) and its measurement's hygiene."""
import math

import pytest
import torch

pytest.importorskip("sklearn")
from bench.quality import split_signal  # noqa: E402
from bench.quality.run import run_one  # noqa: E402


def test_signal_fraction_is_one_for_equal_halves_and_near_zero_for_independent_noise():
    g = [torch.randn(5, 3), torch.randn(7)]
    assert split_signal.signal_fraction(g, [t.clone() for t in g]) == pytest.approx(1.0)
    torch.manual_seed(0)
    a, b = [torch.randn(20000)], [torch.randn(20000)]
    assert abs(split_signal.signal_fraction(a, b)) < 0.05
    # signal s plus noise of the same norm in each half: E⟨A,B⟩ = |s|², E|(A+B)/2|² = |s|² + |n|²/2
    s = torch.randn(20000)
    frac = split_signal.signal_fraction([s + torch.randn(20000)], [s + torch.randn(20000)])
    assert frac == pytest.approx(2 / 3, abs=0.03)
    assert split_signal.signal_fraction([None, s], [torch.ones(1), s]) == pytest.approx(1.0)


def test_the_measurement_leaves_the_run_as_it_would_have_been():
    """Dropout's RNG stream and BatchNorm's running statistics are restored after the extra
    backward passes: the measured run ends exactly where the stored protocol's run ends."""
    fractions, alpha, final, decreases = split_signal.run("bn_dropout_mlp", "sgd")
    ref = run_one(dict(task="bn_dropout_mlp", seed=0, method="qlab_sgd", lr=0.01, rule=None))
    assert final == ref["final_train_loss"]
    assert len(fractions) == split_signal.POINTS and all(math.isfinite(f) for f in fractions)
    assert all(f <= 1.0 for f in fractions)  # ⟨A,B⟩ ≤ |(A+B)/2|² since |A − B|² ≥ 0
    assert alpha == ref["alpha_median"]
    assert len(decreases) == split_signal.POINTS
    assert all(len(d) == 3 and all(math.isfinite(v) for v in d) for d in decreases)
    assert sum(d[0] > 0 for d in decreases) >= 6  # a fitted step lowers its own batch's loss


def test_the_step_s_batch_decrease_is_measured_with_one_dropout_mask():
    """Two frozen losses at one point agree exactly (the mask is fixed), and the run's RNG stream
    is where it was: without the fixed mask the before/after difference would carry mask noise."""
    from bench.quality.tasks import TASKS
    task = TASKS["bn_dropout_mlp"](0)
    x, y = next(iter(task.batches()))
    state = torch.get_rng_state()
    a = split_signal._frozen_loss(task, task.model, x, y)
    b = split_signal._frozen_loss(task, task.model, x, y)
    assert a == b and torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        assert len({float(task.loss(task.model, x, y)) for _ in range(3)}) > 1  # masks vary otherwise


def test_share_is_the_ratio_of_summed_decreases_and_nan_without_a_batch_decrease():
    dec = [(1.0, 0.2, 0.5), (3.0, 0.6, -0.1)]
    assert split_signal.share(dec, 1) == pytest.approx(0.2)
    assert split_signal.share(dec, 2) == pytest.approx(0.1)
    assert math.isnan(split_signal.share([(-1.0, 0.1, 0.1)], 1))


def test_rank_correlation_is_one_for_monotone_pairs_and_minus_one_for_reversed():
    xs = [0.3, -0.1, 0.7, 0.2]
    assert split_signal.rank_correlation(xs, [2 * x + 5 for x in xs]) == pytest.approx(1.0)
    assert split_signal.rank_correlation(xs, [-(x ** 3) for x in xs]) == pytest.approx(-1.0)
    assert split_signal.rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_rule_option_runs_the_protocol_s_run_of_that_rule(monkeypatch):
    """With split_signal.RULE set (--rule), the measured run ends where the protocol's run of that
    rule ends, not the default's."""
    rule = "alternate_trust_ema_rel_near_match_guard_len"
    monkeypatch.setattr(split_signal, "RULE", rule)
    final = split_signal.run("digits_mlp", "adam")[2]
    ref = run_one(dict(task="digits_mlp", seed=0, method="qlab_adam", lr=0.01, rule=rule))
    default = run_one(dict(task="digits_mlp", seed=0, method="qlab_adam", lr=0.01, rule=None))
    assert final == ref["final_train_loss"] != default["final_train_loss"]
