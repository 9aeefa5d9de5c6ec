"""The quality protocol's tasks build, and their losses are what their docstrings say."""
import math

import pytest
import torch

pytest.importorskip("sklearn")
from bench.quality import tasks  # noqa: E402


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_builds_and_its_first_batch_has_a_positive_finite_loss(name):
    t = tasks.TASKS[name](0)
    x, y = next(iter(t.batches()))
    loss = float(t.loss(t.model, x, y).detach())
    assert math.isfinite(loss) and loss > 0
    assert math.isfinite(t.train_loss(t.model)) and t.steps > 0


def test_pinball_loss_weighs_under_and_over_prediction_by_tau():
    """friedman_quantile: residual r = y − f; loss τ·r where r > 0, (τ − 1)·r where r < 0."""
    model = lambda x: x  # noqa: E731  (the "prediction" is x itself)
    x = torch.tensor([[0.0], [2.0]])
    y = torch.tensor([[1.0], [1.0]])  # one under-prediction by 1, one over-prediction by 1
    want = (tasks.TAU * 1 + (1 - tasks.TAU) * 1) / 2
    assert float(tasks._pinball(model, x, y)) == pytest.approx(want)
    assert tasks._eval_pinball(model, x, y) == pytest.approx(want)


def test_a_constant_at_the_training_targets_tau_quantile_minimises_the_pinball_loss():
    _, ytr, _, _ = tasks._friedman()
    q = torch.quantile(ytr, tasks.TAU)
    at = lambda c: tasks._eval_pinball(lambda X: torch.full_like(ytr, c), ytr, ytr)  # noqa: E731
    assert at(float(q)) < min(at(float(q) - 0.1), at(float(q) + 0.1))


def test_digits_lstm_reads_eight_rows_of_eight_pixels():
    t = tasks.digits_lstm(0)
    x, _ = next(iter(t.batches()))
    assert x.shape[1] == 64 and t.model(x).shape == (x.shape[0], 10)
    assert t.model.rnn.input_size == 8
