"""Optimizer-step microbenchmarks (pytest-benchmark): every backend that can be timed here ×
{SGD, Momentum, Adam} × sizes × {fp32, bf16 work}, and the many-small-tensors case, against
torch's own ``foreach`` and ``fused`` optimizers on identical tensors.

QLAB is timed as probe_pass + update_pass on its segment with a fixed sc (optimizer work only).
Ratios, GB/s and % of copy bandwidth are added by ``conftest.derive``. These benchmarks run one
after another; ``python -m qlab_fused bench`` interleaves them, which keeps ratios honest on a
loaded machine — prefer its numbers when the two disagree.
"""
import pytest

from conftest import SIZES, rounds_for
from qlab_fused.benchmarking import micro

IMPLS = [("torch:foreach", "-"), ("torch:fused", "-")] + [
    (f"qlab:{b}", p) for b in ("cuda", "triton", "cpu", "torch") for p in ("inplace", "copy")]


def _bench(benchmark, device, impl, probe, kind, dtype, numel, ntensors):
    why = micro.impls(device)[impl]
    if why:
        pytest.skip(why)
    if impl.startswith("qlab:") and dtype == "bf16" and probe == "inplace":
        pytest.skip("bf16 work always uses the copy probe (fp32 master)")
    spec = dict(impl=impl, kind=kind, dtype=dtype, numel=numel, ntensors=ntensors)
    if impl.startswith("qlab:"):
        spec["probe"] = probe
    try:
        case = micro.build(device=device, **spec)
    except Exception as exc:  # noqa: BLE001 - e.g. a torch fused kernel missing for a dtype
        pytest.skip(f"{impl} not available: {type(exc).__name__}: {exc}")

    def step():
        case.run()
        micro.sync(device)

    benchmark.group = f"{kind}-{dtype}-{numel:.2g}-x{ntensors}"
    benchmark.extra_info.update(suite="step", group=benchmark.group, impl=impl, probe=case.probe,
                                kind=kind, dtype=dtype, numel=numel, ntensors=ntensors,
                                bytes=case.bytes, device=str(device))
    if impl.startswith("qlab:"):
        benchmark.extra_info["floor_ratio"] = micro.floor_ratio(kind, micro.DTYPES[dtype],
                                                                case.probe)
    benchmark.pedantic(step, rounds=rounds_for(step), iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("numel", SIZES, ids=lambda n: f"{n:.2g}")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", micro.KINDS)
@pytest.mark.parametrize("impl,probe", IMPLS, ids=[f"{i}-{p}" for i, p in IMPLS])
def test_step(benchmark, device, copy_gbps, impl, probe, kind, dtype, numel):
    _bench(benchmark, device, impl, probe, kind, dtype, numel, 1)


@pytest.mark.parametrize("kind", micro.KINDS)
@pytest.mark.parametrize("impl,probe", IMPLS, ids=[f"{i}-{p}" for i, p in IMPLS])
def test_step_many_small(benchmark, device, copy_gbps, impl, probe, kind):
    """200 tensors, 1e6 elements in all: per-tensor overheads (foreach/fused launch lists) against
    QLAB's one flat segment."""
    _bench(benchmark, device, impl, probe, kind, "fp32", 1_000_000, 200)
