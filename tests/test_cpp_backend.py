"""The compiled ``cpu`` / ``cuda`` backends (``qlab_fused._C``): op registration (opcheck), bitwise
determinism across runs, thread counts and ISA builds, large odd sizes, argument errors.

The per-pass contract against the float64 reference is in test_passes.py, which picks these
backends up automatically.
"""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from qlab_fused.backends import get, why_not
from qlab_fused.contract import (DIR_P, DIR_V, KIND_ADAM, KIND_SGD, RED_LEN, SC_ALPHA, Hyper,
                                 scalars)

from test_passes import CASE_IDS, CASES, HYPERS, run_case

CPU_REASON = why_not("cpu", torch.device("cpu"))
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(
               CPU_REASON is not None, reason=f"cpu extension not built: {CPU_REASON}")),
           pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
               not torch.cuda.is_available()
               or why_not("cuda", torch.device("cuda")) is not None,
               reason="needs a GPU and the CUDA build of qlab_fused._C")])]


def _module(device):
    return get(device, device)[1]


def _segment(h, n, device, dtype=torch.float32, inplace=True, seed=0):
    # numpy's generator: torch.randn's values depend on the CPU capability it runs with.
    rng = np.random.default_rng(seed)
    rnd = lambda: torch.from_numpy(rng.standard_normal(n, dtype=np.float32))  # noqa: E731
    master = rnd().to(device)
    work = master if inplace else master.to(dtype, copy=True)
    grad = rnd().to(dtype).to(device)
    states = [rnd().abs().to(device) for _ in h.state_names()]
    sc = scalars(torch.tensor(3.0), torch.tensor(True), torch.tensor(0.05), h, device)
    sc[SC_ALPHA] = 0.02
    return master, work, grad, states, sc


def _op_args(h, master, work, grad, states, sc, pdir, inplace):
    return (master, None if inplace else work, grad, list(states), sc, h.kind, h.lr_scale,
            h.weight_decay, h.momentum, h.dampening, h.nesterov, h.beta1, h.beta2, h.eps,
            h.decoupled, pdir)


OPCHECK = [("adam", torch.float32, True, DIR_V), ("adamw", torch.bfloat16, False, DIR_P),
           ("nesterov_wd", torch.float16, False, DIR_V), ("sgd_wd", torch.float32, True, DIR_P)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,dtype,inplace,pdir", OPCHECK)
def test_opcheck(device, name, dtype, inplace, pdir):
    _module(device)  # loads the extension and its fake kernels
    h = HYPERS[name]
    seg = _segment(h, 1031, device, dtype, inplace)
    args = _op_args(h, *seg, pdir, inplace)
    torch.library.opcheck(torch.ops.qlab_fused.probe_pass.default, args)
    torch.library.opcheck(torch.ops.qlab_fused.update_pass.default, args)


def _run_twice_bits(device, h, n, dtype, inplace, pdir, threads=None):
    """Digest of every output buffer after one probe + update."""
    module = _module(device)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        master, work, grad, states, sc = _segment(h, n, device, dtype, inplace, seed=3)
        red = module.probe_pass(master, work, grad, states, sc, h, pdir)
        module.update_pass(master, work, grad, states, sc, h, pdir, inplace)
    finally:
        torch.set_num_threads(old)
    digest = hashlib.sha256()
    for t in [red, master, work, *states]:
        digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["adam_wd", "momentum_damp_wd", "sgd"])
def test_bitwise_deterministic(device, name):
    h, n = HYPERS[name], 300_007
    first = _run_twice_bits(device, h, n, torch.float32, True, DIR_P)
    assert _run_twice_bits(device, h, n, torch.float32, True, DIR_P) == first
    if device == "cpu":
        one = _run_twice_bits(device, h, n, torch.bfloat16, False, DIR_V, threads=1)
        two = _run_twice_bits(device, h, n, torch.bfloat16, False, DIR_V, threads=2)
        assert one == two, "reductions or updates depend on the thread count"


_ISA_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_cpp_backend as t
print(torch.ops.qlab_fused.cpu_isa(), t._run_twice_bits("cpu", t.HYPERS["adam_wd"], 70_001,
      torch.float16, False, 1))
"""


@pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu extension not built: {CPU_REASON}")
def test_same_bits_on_every_isa():
    """The default, AVX2 and AVX-512 builds do the same fp32 operations in the same order."""
    script = _ISA_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for cap in ("default", "avx2", "avx512"):
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True)
        isa, digest = res.stdout.split()
        out[isa] = digest
    assert "DEFAULT" in out
    assert len(set(out.values())) == 1, out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [278_011, 2**20 + 3])
@pytest.mark.parametrize("name,dtype,inplace,pdir", CASES, ids=CASE_IDS)
def test_large_sizes_match_reference(device, n, name, dtype, inplace, pdir):
    run_case(_module(device), device, HYPERS[name], n, dtype, inplace, pdir, steps=2, seed=n)


@pytest.mark.parametrize("device", DEVICES)
def test_argument_errors_name_the_argument(device):
    module = _module(device)
    h = Hyper(KIND_ADAM)
    master, work, grad, states, sc = _segment(h, 64, device, torch.bfloat16, inplace=False)
    with pytest.raises(RuntimeError, match="takes 2 state tensors"):
        module.probe_pass(master, work, grad, states[:1], sc, h, DIR_V)
    with pytest.raises(RuntimeError, match="master must be float32"):
        module.probe_pass(master.double(), work, grad, states, sc, h, DIR_V)
    with pytest.raises(RuntimeError, match="grad has 63 elements"):
        module.probe_pass(master, work, grad[:63], states, sc, h, DIR_V)
    with pytest.raises(RuntimeError, match="sc must be"):
        module.update_pass(master, work, grad, states, sc[:4], h, DIR_V, False)
    with pytest.raises(RuntimeError, match="kind must be"):
        torch.ops.qlab_fused.probe_pass(master, None, master, [], sc, 7, 1.0, 0.0, 0.0, 0.0,
                                        False, 0.9, 0.999, 1e-8, False, DIR_V)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_segment(device):
    module = _module(device)
    h = Hyper(KIND_SGD)
    master, work, grad, states, sc = _segment(h, 0, device)
    red = module.probe_pass(master, work, grad, states, sc, h, DIR_V)
    assert red.shape == (RED_LEN,) and not red.any()
    module.update_pass(master, work, grad, states, sc, h, DIR_V, True)
