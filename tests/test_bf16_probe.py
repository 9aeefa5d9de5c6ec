"""bf16 models and bf16 autocast: every probe moves the parameters by at least an ulp of the dtype
the forward reads them in (``reference.PROBE_ULPS``).

Before the probe floor QLAB-Momentum's α sank to 1e-9..1e-28 on bf16 models, and to 1e-15..1e-31 on
fp32 models run under bf16 autocast: probes too short to move most parameters as the forward reads
them fitted short steps, which made the next probes shorter still (docs/quality.md, log items 29 and
30). The rule's part is tested in tests/test_rules.py; here, that the optimizer gives the rule the
dtype, and the measured failures at the protocol's scale."""
import pytest
import torch

import qlab_fused as qf
from conftest import DEVICES, record_rule_step_arg


@pytest.mark.parametrize("dtypes,autocast,expected", [
    ((torch.float32,), None, torch.float32), ((torch.bfloat16,), None, torch.bfloat16),
    ((torch.float32, torch.bfloat16), None, torch.bfloat16),
    ((torch.float16, torch.float32), None, torch.float16),
    ((torch.float32,), torch.bfloat16, torch.bfloat16), ((torch.float32,), torch.float16, torch.float16)])
@pytest.mark.parametrize("device", DEVICES)
def test_the_probe_floor_counts_the_coarsest_dtype_the_forward_reads(dtypes, autocast, expected, device,
                                                                    monkeypatch):
    """The floor is in ulps of what the probe forward reads: the model's own parameters (a bf16 model
    keeps an fp32 master, but its probe is rounded to bf16), the coarsest of them if they differ, or
    autocast's dtype where the forward (here: inside the closure, out of the optimizer's sight) runs
    under autocast."""
    seen = record_rule_step_arg(monkeypatch, 8, "param_eps")
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 4).to(device=device, dtype=d) for d in dtypes]
    x = torch.randn(8, 4, device=device)
    groups = [{"params": m.parameters()} for m in layers]
    opt = qf.QLABSGD(groups, alpha0=1e-2, momentum=0.9, backend="torch")

    def closure():
        with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            h = x
            for m in layers:
                h = m(h.to(m.weight.dtype)).float()
        return (h ** 2).mean()

    for _ in range(2):
        opt.step(closure)
    assert seen == [torch.finfo(expected).eps] * 2


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # run_one trains single-threaded


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_qlab_momentum_trains_a_bf16_model(seed, autocast, restore_threads):
    """The digits MLP of bench/quality cast to bf16, or kept in fp32 with its forward under bf16
    autocast (loss in fp32), QLAB-Momentum from α₀ = 1e-3. Measured (log item 30), seeds 0 / 1:
    bf16 model median α 0.063 / 0.057, final train loss 0.111 / 0.094; autocast 0.065 / 0.061, 0.106 /
    0.090 (fp32: 0.086–0.116). Without the floor α sank to 2e-9 / 2e-12 (bf16 model, loss 0.274 /
    0.262) and 7e-23 / 4e-17 (autocast, 2.33 / 0.265)."""
    pytest.importorskip("sklearn")
    from bench.quality import bf16
    r = bf16.run(dict(task="digits_mlp", seed=seed, method="qlab_momentum", lr=1e-3, rule=None,
                      loss="fp32", autocast=autocast))
    assert r["alpha_median"] > 0.01, r["alpha_median"]
    assert r["final_train_loss"] < 0.15, r["final_train_loss"]
