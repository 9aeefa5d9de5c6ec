"""Triton backend beyond the shared contract tests (``test_passes.py`` covers the math).

Runs on CPU under ``TRITON_INTERPRET=1`` and on CUDA when present: availability reasons, the
fixed-order second reduction stage, bitwise reproducibility, no recompilation when per-step scalars
or hyperparameters change, and large sizes on GPU (int64 indexing, the large-block probe config).
"""
import inspect
import os

import pytest
import torch

pytest.importorskip("triton")

from qlab_fused.backends import torch_backend, triton_backend  # noqa: E402
from qlab_fused.contract import (DIR_P, DIR_V, KIND_ADAM, KIND_MOMENTUM, KIND_SGD,  # noqa: E402
                                 RED_GG, RED_LEN, RED_VG, SC_ALPHA, SC_BETA, Hyper, scalars)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Under the interpreter CUDA tensors would be copied to the host per launch: test CPU there only.
DEVICES = ["cpu"] if INTERPRET else (["cuda"] if torch.cuda.is_available() else [])
needs_device = pytest.mark.skipif(not DEVICES, reason="needs TRITON_INTERPRET=1 or a CUDA device")
needs_cuda = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(),
                                reason="GPU-only (and not under the interpreter)")

HYPERS = [Hyper(KIND_SGD, weight_decay=0.01),
          Hyper(KIND_MOMENTUM, momentum=0.9, nesterov=True, weight_decay=0.01),
          Hyper(KIND_ADAM, weight_decay=0.1, decoupled=True)]


def _buffers(n, h, device, dtype, inplace, seed=0):
    gen = torch.Generator().manual_seed(seed)
    master = torch.randn(n, generator=gen).to(device)
    work = master if inplace else master.to(dtype)
    grad = torch.randn(n, generator=gen).to(device=device, dtype=dtype)
    states = [torch.rand(n, generator=gen).to(device) for _ in h.state_names()]
    return master, work, grad, states


def _steps(module, h, n, device, dtype, inplace, pdir, steps=3):
    """A few probe/update steps; returns every output tensor (reductions and buffers)."""
    master, work, grad, states = _buffers(n, h, device, dtype, inplace)
    out = []
    for t in range(1, steps + 1):
        sc = scalars(torch.tensor(float(t)), torch.tensor(True), torch.tensor(0.05 * t), h, device)
        out.append(module.probe_pass(master, work, grad, states, sc, h, pdir).clone())
        sc[SC_ALPHA] = 0.03 * t
        module.update_pass(master, work, grad, states, sc, h, pdir, inplace)
        grad = grad.flip(0).contiguous()
    return out + [master, work, *states]


# ------------------------------------------------------------------------------------------------
# Availability
# ------------------------------------------------------------------------------------------------
def test_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = triton_backend.unavailable("triton", torch.device("cpu"))
    assert isinstance(reason, str) and "TRITON_INTERPRET=1" in reason
    monkeypatch.undo()
    # Setting the variable here would import the kernels in interpreter mode for the whole
    # session (triton reads it when a kernel is defined), so the positive case runs only where
    # the session already interprets.
    if INTERPRET:
        assert triton_backend.unavailable("triton", torch.device("cpu")) is None


def test_other_devices_get_a_reason():
    reason = triton_backend.unavailable("triton", torch.device("meta"))
    assert isinstance(reason, str) and "meta" in reason


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------
@needs_device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows", [1, 255, 256, 1000])
def test_second_stage_sums_in_a_fixed_order(device, rows):
    """Row counts around the tile size; the sum matches float64 and repeats bit for bit."""
    from qlab_fused.kernels.reduce import sum_partials

    parts = torch.randn(rows, RED_LEN, generator=torch.Generator().manual_seed(rows)).to(device)
    a, b = sum_partials(parts), sum_partials(parts.clone())
    assert a.shape == (RED_LEN,) and a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.testing.assert_close(a.double().cpu(), parts.double().sum(0).cpu(), rtol=1e-5,
                               atol=1e-5 * rows)


@needs_device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h", HYPERS, ids=["sgd", "nesterov", "adamw"])
@pytest.mark.parametrize("dtype,inplace", [(torch.float32, True), (torch.bfloat16, False)])
def test_bitwise_reproducible(device, h, dtype, inplace):
    """Same inputs, same bits: reductions, θ, work and state, over several steps."""
    n = 40_001
    first = _steps(triton_backend, h, n, device, dtype, inplace, DIR_P)
    second = _steps(triton_backend, h, n, device, dtype, inplace, DIR_P)
    for a, b in zip(first, second):
        assert torch.equal(a.view(torch.int8), b.view(torch.int8))  # bits, NaN-proof


# ------------------------------------------------------------------------------------------------
# No recompilation when scalars change
# ------------------------------------------------------------------------------------------------
def _kernels():
    from qlab_fused.kernels import probe, reduce, update

    return {"probe": probe._probe_kernel, "update": update._update_kernel,
            "reduce": reduce._sum_rows_kernel}


def _constexpr_names(kernel):
    sig = inspect.signature(kernel.fn)
    return {name for name, p in sig.parameters.items() if "constexpr" in str(p.annotation)}


def test_only_structural_parameters_are_constexpr():
    """Hyperparameters and per-step scalars must be runtime arguments, never compile-time."""
    structural = {"KIND", "NESTEROV", "DECOUPLED", "PROBE_DIR", "INPLACE", "NEEDS_G",
                  "BLOCK_SIZE", "ROW_BLOCK", "WIDTH"}
    for name, kernel in _kernels().items():
        assert _constexpr_names(kernel) <= structural, name


def _spec_key(constexprs, args, kwargs, arg_names):
    """What Triton specializes a launch on: constexpr values, each runtime argument's type, and
    the integer/pointer properties it specializes by default (== 1, divisible by 16, 16-byte
    aligned). The interpreter has no compile cache, so this models it; on GPU the test also counts
    the real cache entries."""
    bound = dict(zip(arg_names, args), **kwargs)
    key = []
    for name in arg_names:
        v = bound.get(name)
        if name in constexprs:
            key.append((name, v))
        elif isinstance(v, torch.Tensor):
            key.append((name, "ptr", v.dtype, v.data_ptr() % 16 == 0))
        elif isinstance(v, bool):
            key.append((name, "i1"))
        elif isinstance(v, int):
            key.append((name, "i64" if abs(v) >= 2 ** 31 else "i32", v == 1, v % 16 == 0))
        else:
            key.append((name, type(v).__name__))  # float -> fp32, whatever its value
    return tuple(key)


def _compiled_variants(kernel):
    """Number of compiled kernels in a JITFunction's cache (None under the interpreter)."""
    caches = getattr(kernel, "device_caches", None)
    if caches is None:
        return None
    return sum(len(entry[0]) for entry in caches.values())


@needs_device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [KIND_MOMENTUM, KIND_ADAM])
def test_changing_scalars_does_not_recompile(device, kind):
    kernels = _kernels()
    if not all(hasattr(k, "add_pre_run_hook") for k in kernels.values()):
        pytest.skip("this Triton has no pre-run hooks")
    seen = {name: set() for name in kernels}

    def recorder(name, kernel):
        names, cx = list(inspect.signature(kernel.fn).parameters), _constexpr_names(kernel)
        return lambda *a, **kw: seen[name].add(_spec_key(cx, a, kw, names))

    for name, kernel in kernels.items():
        kernel.add_pre_run_hook(recorder(name, kernel))
    try:
        n, inplace = 5000, True
        master, work, grad, states = _buffers(n, Hyper(kind), device, torch.float32, inplace)
        variants, keys_after_warmup = [], None
        settings = [
            dict(),
            dict(beta1=0.8, beta2=0.95, eps=1e-6, momentum=0.5),
            dict(weight_decay=0.1, lr_scale=0.25, dampening=0.1),
            dict(weight_decay=0, lr_scale=1, momentum=0, eps=1),  # ints must not change types
        ]
        for i, kw in enumerate(settings):
            h = Hyper(kind, **kw)
            sc = scalars(torch.tensor(float(i + 1)), torch.tensor(True), torch.tensor(0.1 / (i + 1)),
                         h, device)
            sc[SC_ALPHA] = 0.07 * (i + 1)
            triton_backend.probe_pass(master, work, grad, states, sc, h, DIR_V)
            triton_backend.update_pass(master, work, grad, states, sc, h, DIR_V, inplace)
            variants.append({k: _compiled_variants(v) for k, v in kernels.items()})
            if keys_after_warmup is None:  # on GPU, the first launch also autotunes the update
                keys_after_warmup = {k: set(v) for k, v in seen.items()}
    finally:
        for kernel in kernels.values():
            kernel.pre_run_hooks.clear()
    assert seen == keys_after_warmup
    if INTERPRET:
        assert {name: len(keys) for name, keys in seen.items()} == {k: 1 for k in kernels}
    assert all(v == variants[0] for v in variants), variants  # real caches (GPU) did not grow


# ------------------------------------------------------------------------------------------------
# GPU only: large sizes
# ------------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("n", [(1 << 20) + 3, (1 << 24) + 1, 3 * (1 << 24) + 5])
@pytest.mark.parametrize("h", HYPERS, ids=["sgd", "nesterov", "adamw"])
@pytest.mark.parametrize("dtype,inplace,pdir", [(torch.float32, True, DIR_P),
                                                (torch.bfloat16, False, DIR_V)])
def test_large_matches_torch_backend(n, h, dtype, inplace, pdir):
    got = _steps(triton_backend, h, n, "cuda", dtype, inplace, pdir, steps=2)
    want = _steps(torch_backend, h, n, "cuda", dtype, inplace, pdir, steps=2)
    for i, (a, b) in enumerate(zip(got, want)):
        if a.numel() == RED_LEN:  # |⟨X,Y⟩| <= max(|X|², |Y|²): bound the cross terms by it
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(),
                                       msg=f"reductions {i}")
        elif a.dtype == torch.bfloat16:
            # one rounding each of fp32 values within the tolerance below: at most one bf16 ulp
            # apart, plus that tolerance where θ − αV cancels to near 0 (seen on an H200)
            a, b = a.float(), b.float()
            bound = torch.maximum(a.abs(), b.abs()) * (2 ** -7 + 1e-5) + 1e-6 * b.abs().max()
            assert ((a - b).abs() <= bound).all(), f"bf16 buffer {i}"
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@needs_cuda
def test_large_bitwise_reproducible():
    n = 3 * (1 << 24) + 5
    first = _steps(triton_backend, HYPERS[2], n, "cuda", torch.float32, True, DIR_P, steps=2)
    second = _steps(triton_backend, HYPERS[2], n, "cuda", torch.float32, True, DIR_P, steps=2)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_cuda
def test_more_than_2_31_elements():
    """int64 offsets: a buffer past 2^31 elements is written everywhere, to its last element. The
    gradient is ±1 and β, α powers of two, so every expected value is one rounding of an exact
    product and can be compared bit for bit."""
    n = (1 << 31) + 17
    if torch.cuda.get_device_properties(0).total_memory < 80 * 2 ** 30:
        pytest.skip("needs about 50 GiB of GPU memory")
    h = Hyper(KIND_SGD)
    gen = torch.Generator(device="cuda").manual_seed(0)
    master = torch.rand(n, device="cuda", generator=gen) + 0.5
    start = master.clone()
    grad = (torch.rand(n, device="cuda", generator=gen) < 0.5).to(torch.bfloat16) * 2 - 1
    work = torch.full((n,), float("nan"), device="cuda", dtype=torch.bfloat16)  # poison
    sc = scalars(torch.tensor(1.0), torch.tensor(True), torch.tensor(0.5), h, "cuda")
    red = triton_backend.probe_pass(master, work, grad, [], sc, h, DIR_V)
    assert torch.equal(work, (start - 0.5 * grad.float()).to(torch.bfloat16))
    torch.testing.assert_close(red[[RED_VG, RED_GG]].double().cpu(),
                               torch.full((2,), float(n), dtype=torch.float64), rtol=1e-6, atol=0)
    work.fill_(float("nan"))
    sc[SC_ALPHA], sc[SC_BETA] = 0.25, 0.5
    triton_backend.update_pass(master, work, grad, [], sc, h, DIR_V, False)
    want = start - 0.25 * grad.float()
    assert torch.equal(master, want) and torch.equal(work, want.to(torch.bfloat16))


def _steps_with_autotune_off(h, n, device, tmp_path):
    """``_steps`` (bf16 work, copy probe) in a fresh process with QLAB_FUSED_TRITON_AUTOTUNE=0."""
    import subprocess
    import sys
    import textwrap
    here = os.path.dirname(os.path.abspath(__file__))
    dst = tmp_path / "fixed.pt"
    script = tmp_path / "fixed.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path[:0] = [{here!r}, {os.path.dirname(here)!r}]
        from test_triton_backend import _steps, HYPERS
        from qlab_fused.backends import triton_backend
        from qlab_fused.kernels import update
        assert update._tuned is None
        out = _steps(triton_backend, HYPERS[{HYPERS.index(h)}], {n}, {device!r}, torch.bfloat16,
                     False, {DIR_V}, steps=2)
        torch.save([t.cpu() for t in out], {str(dst)!r})
        """))
    env = dict(os.environ, QLAB_FUSED_TRITON_AUTOTUNE="0")
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=300)
    return torch.load(dst)


@needs_cuda
@pytest.mark.parametrize("h", HYPERS, ids=["sgd", "nesterov", "adamw"])
def test_update_bits_do_not_depend_on_autotuning(h, tmp_path):
    """The update pass is elementwise: the fixed launch configuration (autotuning turned off, in a
    fresh process since the switch is read at import) writes the same bits as the tuned one."""
    from qlab_fused.kernels import update
    if update._tuned is None:
        pytest.skip("autotuning is turned off in this process (QLAB_FUSED_TRITON_AUTOTUNE)")
    n = 3 * (1 << 20) + 5
    fixed = _steps_with_autotune_off(h, n, "cuda", tmp_path)
    tuned = _steps(triton_backend, h, n, "cuda", torch.bfloat16, False, DIR_V, steps=2)
    assert len(tuned) == len(fixed)
    for a, b in zip(tuned, fixed):
        if a.numel() == RED_LEN:
            continue  # the probe pass is the same fixed-config kernel in both processes
        assert torch.equal(a.cpu(), b)


def test_probe_config_is_a_function_of_size_and_kind(monkeypatch):
    """The GPU launch configurations (the reduction bits depend on them): powers of two, at least
    one element per thread, the same for the same (n, kind), and Adam's measured choice at 1e9."""
    from qlab_fused.kernels import _common, probe
    monkeypatch.setattr(_common, "interpreting", lambda: False)
    for kind in (KIND_SGD, KIND_MOMENTUM, KIND_ADAM):
        for n in (1, 4097, (1 << 24) - 1, 1 << 24, 10 ** 9):
            block, warps = probe.config(n, kind)
            assert block & (block - 1) == 0 and warps & (warps - 1) == 0
            assert block >= 32 * warps and probe.config(n, kind) == (block, warps)
    assert probe.config(10 ** 9, KIND_ADAM) == (2048, 8)
    assert probe.config(10 ** 9, KIND_MOMENTUM) == (4096, 8)


@pytest.mark.parametrize("value,wanted", [(None, True), ("1", True), ("0", False), ("off", False),
                                          (" False ", False), ("yes", True)])
def test_triton_autotune_switch_reads_the_environment(monkeypatch, value, wanted):
    from qlab_fused.kernels import _common
    if value is None:
        monkeypatch.delenv("QLAB_FUSED_TRITON_AUTOTUNE", raising=False)
    else:
        monkeypatch.setenv("QLAB_FUSED_TRITON_AUTOTUNE", value)
    assert _common.autotune_wanted() is wanted
