"""Probe hygiene (SPEC §5): same dropout mask, running statistics untouched, same autocast."""
import copy

import pytest
import torch

import qlab_fused as qf


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(8, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def batch():
    g = torch.Generator().manual_seed(5)
    return torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)


@pytest.mark.parametrize("mode", ["closure", "loss"])
@pytest.mark.parametrize("probe", ["inplace", "copy"])
def test_probe_replays_dropout_and_keeps_running_stats(mode, probe):
    x, y = batch()
    net = Net()
    fresh = copy.deepcopy(net)
    opt = qf.QLABAdam(net.parameters(), alpha0=0.05, probe=probe)
    seen = {}

    def closure():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        if not torch.is_grad_enabled():  # the probe call: remember where it evaluated
            seen["probe_params"] = {k: v.detach().clone() for k, v in net.named_parameters()}
            seen["Lbeta"] = loss.detach().clone()
        return loss

    torch.manual_seed(42)
    rng_before = torch.get_rng_state()
    if mode == "closure":
        opt.step(closure)
    else:
        opt.zero_grad()  # records the RNG state the training forward starts from
        loss = closure()
        loss.backward()
        opt.step(closure, loss=loss)
    rng_after_step = torch.get_rng_state()

    # One plain training forward from the same start: its BN statistics and RNG end state.
    ref = copy.deepcopy(fresh)
    torch.set_rng_state(rng_before)
    ref_loss = torch.nn.functional.cross_entropy(ref(x), y)
    assert torch.equal(torch.get_rng_state(), rng_after_step), "the probe must not advance the RNG"
    assert torch.equal(net.bn.running_mean, ref.bn.running_mean)
    assert torch.equal(net.bn.running_var, ref.bn.running_var)
    assert int(net.bn.num_batches_tracked) == int(ref.bn.num_batches_tracked) == 1

    # Lβ equals a manual evaluation at the probe parameters with the training forward's mask.
    manual = copy.deepcopy(fresh)
    with torch.no_grad():
        for name, p in manual.named_parameters():
            p.copy_(seen["probe_params"][name])
        torch.set_rng_state(rng_before)
        manual_loss = torch.nn.functional.cross_entropy(manual(x), y)
    assert torch.equal(manual_loss, seen["Lbeta"])
    assert not torch.equal(ref_loss.detach(), seen["Lbeta"]), "the probe moved the parameters"


def test_probe_with_another_mask_would_differ():
    """Control for the test above: without replay, a different dropout mask gives another loss."""
    x, y = batch()
    net = Net()
    torch.manual_seed(1)
    a = torch.nn.functional.cross_entropy(net(x), y)
    b = torch.nn.functional.cross_entropy(net(x), y)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("mode", ["closure", "loss"])
def test_probe_runs_under_the_training_autocast_state(mode):
    x, y = batch()
    net = Net()
    opt = qf.QLABSGD(net.parameters(), alpha0=0.01)
    states = []

    def closure():
        states.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return torch.nn.functional.cross_entropy(net(x).float(), y)

    if mode == "closure":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt.step(closure)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt.zero_grad()
            loss = closure()
        loss.backward()
        opt.step(closure, loss=loss)  # outside the autocast block: the probe still uses it
    assert states == [(True, True), (False, True)]


def test_the_probe_records_the_dtype_autocast_reads_parameters_in():
    """For the rule's probe floor: the dtypes autocast ran modules with parameters in during the
    probe forward, also where the autocast region is entered inside the model (the optimizer cannot
    see it from outside); parameterless modules and code after the probe are not counted."""
    from qlab_fused import hygiene
    x, _ = batch()
    net = Net()

    class Inside(torch.nn.Module):
        def __init__(self, inner, dtype):
            super().__init__()
            self.inner, self.dtype = inner, dtype

        def forward(self, x):
            with torch.autocast("cpu", dtype=self.dtype):
                return self.inner(x)

    with hygiene.probe_context(None) as rec:
        net(x)
    assert rec.autocast_dtypes == set()
    with hygiene.probe_context(None) as rec:
        Inside(torch.nn.ReLU(), torch.bfloat16)(x)
    assert rec.autocast_dtypes == set()
    for dtype in (torch.bfloat16, torch.float16):
        with hygiene.probe_context(None) as rec:
            Inside(net, dtype)(x)
        assert rec.autocast_dtypes == {dtype}
    Inside(net, torch.bfloat16)(x)  # after the probe: the hook is gone
    assert rec.autocast_dtypes == {torch.float16}
