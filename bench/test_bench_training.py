"""Whole training-step benchmarks (pytest-benchmark): an MLP, a small CNN and a char-level GPT with
torch's SGD/Adam (fused where available) and QLAB-SGD/QLAB-Adam with inplace and copy probes.

The median breakdown (zero_grad, forward, backward, probe forward, fused passes, rest) goes into
``extra_info``; ``conftest.derive`` adds the ratio to the torch step and its floor 1 + F/(F+B).
"""
import pytest

from conftest import rounds_for
from qlab_fused.benchmarking import models
from qlab_fused.benchmarking.micro import median

MODES = ("torch", "qlab-inplace", "qlab-copy")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("model", models.MODELS)
def test_training_step(benchmark, device, model, base, mode):
    run = models._Run(model, base, mode, device, backend="auto")
    for _ in range(2):
        run.step(record=False)

    def step():
        run.step(record=True)

    benchmark.group = f"train-{model}-{base}"
    benchmark.pedantic(step, rounds=rounds_for(step, lo=5, hi=30), iterations=1, warmup_rounds=1)
    times = {k: median([r[k] for r in run.rows]) for k in run.rows[0]}
    benchmark.extra_info.update(suite="train", model=model, base=base, mode=mode,
                                impl=run.opt._bench_impl, params=models.num_params(run.model),
                                tensor_bytes=models.tensor_bytes(run.model, run.opt), **times)
