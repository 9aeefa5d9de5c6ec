"""Optimizer-step microbenchmarks: QLAB's two passes timed directly on a segment (fixed ``sc``, so the
work is optimizer work only), against torch's own optimizers (imported, ``foreach`` and ``fused``)
on identical tensors; the SPEC §4 byte model; the machine's copy bandwidth; a median timer.

Bytes per element (N elements; w = work/param dtype size, g = grad dtype size, fp32 master and state,
ns = number of state buffers: SGD 0, Momentum 1, Adam 2):
    torch step           2w + g + 2·ns·w          (torch keeps its state in the param dtype)
    QLAB probe pass      4 + g + 8·ns + w         (read θ, G, state; write state, probe)
    QLAB update pass     4 + r + 4 (+ w in copy)  (r: G for SGD, G + buf for Momentum, m + v for Adam)
which is SPEC §4's table for fp32: torch 3/5/7, QLAB inplace 6/9/11, copy 7/10/12 (× 4 bytes).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import torch

from ..backends import NAMES, why_not
from ..contract import DIR_V, SC_ALPHA, scalars

KINDS = ("sgd", "momentum", "adam")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_NSTATE = {"sgd": 0, "momentum": 1, "adam": 2}
BASELINES = ("torch:foreach", "torch:fused")
LR = 1e-3


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def qlab_bytes(kind: str, dtype: torch.dtype, probe: str) -> tuple[float, float]:
    """(probe pass, update pass) bytes per element (SPEC §4 model)."""
    w = g = _size(dtype)
    ns = _NSTATE[kind]
    inplace = probe == "inplace" and dtype == torch.float32
    reads = {"sgd": g, "momentum": g + 4, "adam": 8}[kind]
    return 4 + g + 8 * ns + w, 4 + reads + 4 + (0 if inplace else w)


def torch_bytes(kind: str, dtype: torch.dtype) -> float:
    w = _size(dtype)
    return 2 * w + w + 2 * _NSTATE[kind] * w


def floor_ratio(kind: str, dtype: torch.dtype, probe: str) -> float:
    """Byte-model ideal time ratio QLAB (probe + update) / torch step: 11/7 Adam, 2.0 SGD (fp32)."""
    return sum(qlab_bytes(kind, dtype, probe)) / torch_bytes(kind, dtype)


def impls(device) -> dict:
    """{impl: None if it can be timed on ``device``, else why not}. Triton on CPU runs only in its
    interpreter, which says nothing about speed, so it is listed as not timed."""
    device = torch.device(device)
    out = {b: None for b in BASELINES}
    for name in NAMES:
        reason = why_not(name, device)
        if name == "triton" and device.type == "cpu":
            reason = "CPU runs Triton only in its interpreter (correctness, not speed): not timed"
        out[f"qlab:{name}"] = reason
    return out


# -- timing -----------------------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_parts(parts: dict, device) -> dict:
    """Run each callable once, in order; {name: seconds}. CUDA: events, one sync at the end."""
    if torch.device(device).type == "cuda":
        ev = []
        for fn in parts.values():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            ev.append((a, b))
        torch.cuda.synchronize(device)
        return {k: a.elapsed_time(b) / 1e3 for k, (a, b) in zip(parts, ev)}
    out = {}
    for k, fn in parts.items():
        t0 = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - t0
    return out


def median(xs) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def copy_bandwidth(device, numel: int | None = None, reps: int = 10) -> dict:
    """dst.copy_(src) on fp32 buffers far larger than the last-level cache; bytes = read + write
    (the STREAM convention: write-allocate traffic is not counted)."""
    device = torch.device(device)
    if numel is None:
        numel = (1 << 28) if device.type == "cuda" else (1 << 25)
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    ts = [time_parts({"copy": lambda: dst.copy_(src)}, device)["copy"] for _ in range(reps)]
    t = median(ts)
    nbytes = 2 * numel * 4
    del src, dst
    return {"numel": numel, "bytes": nbytes, "median_s": t, "gbps": nbytes / t / 1e9,
            "min_s": min(ts), "gbps_best": nbytes / min(ts) / 1e9}


# -- cases ------------------------------------------------------------------------------------------
@dataclass
class Case:
    impl: str
    kind: str
    dtype: str
    numel: int
    ntensors: int
    probe: str
    bytes: float                       # bytes moved per step (byte model)
    parts: dict = field(default_factory=dict)   # name -> callable, run in order = one step
    note: str = ""
    keep: list = field(default_factory=list)     # objects that must outlive the callables

    def run(self) -> None:
        for fn in self.parts.values():
            fn()


def split_sizes(numel: int, ntensors: int) -> list:
    """``ntensors`` sizes summing to ``numel``, varied ±30% like a real model's layers."""
    if ntensors <= 1:
        return [numel]
    base = numel // ntensors
    sizes = [max(1, base + ((i * 37) % 7 - 3) * base // 10) for i in range(ntensors - 1)]
    sizes.append(max(1, numel - sum(sizes)))
    return sizes


def _tensors(numel, ntensors, dtype, device, seed):
    gen = torch.Generator(device=device).manual_seed(seed)
    ps, gs = [], []
    for n in split_sizes(numel, ntensors):
        ps.append(torch.randn(n, device=device, generator=gen).to(dtype))
        gs.append((torch.randn(n, device=device, generator=gen) * 1e-2).to(dtype))
    return ps, gs


def _params(numel, ntensors, dtype, device, seed):
    ps, gs = _tensors(numel, ntensors, dtype, device, seed)
    params = [torch.nn.Parameter(p) for p in ps]
    for p, g in zip(params, gs):
        p.grad = g
    return params


def build(impl: str, kind: str, dtype: str, numel: int, device, ntensors: int = 1,
          probe: str = "inplace", seed: int = 0) -> Case:
    """One timed case on freshly made tensors (same seed → same values for every impl)."""
    device = torch.device(device)
    dt = DTYPES[dtype]
    params = _params(numel, ntensors, dt, device, seed)
    mom = 0.9 if kind == "momentum" else 0.0
    if impl.startswith("torch:"):
        flag = impl.split(":", 1)[1]
        kw = {flag: True}
        if kind == "adam":
            opt = torch.optim.Adam(params, lr=LR, **kw)
        else:
            opt = torch.optim.SGD(params, lr=LR, momentum=mom, **kw)
        opt.step()  # creates the state (the first step differs: buf = G)
        return Case(impl, kind, dtype, numel, ntensors, "-", torch_bytes(kind, dt) * numel,
                    {"step": opt.step}, keep=[opt, params])
    import qlab_fused as qf

    name = impl.split(":", 1)[1]
    if kind == "adam":
        opt = qf.QLABAdam(params, alpha0=LR, backend=name, probe=probe)
    else:
        opt = qf.QLABSGD(params, alpha0=LR, momentum=mom, backend=name, probe=probe)
    (seg,) = opt._segments
    seg.attach_grads()  # the gradients set above are copied into the flat grad buffer
    h = seg.hyper
    step = torch.tensor(2.0, device=device)  # not the first step: momentum reads its buffer
    sc = scalars(step, torch.tensor(True, device=device), torch.tensor(LR, device=device), h)
    sc[SC_ALPHA] = LR
    be = seg.backend

    def probe_fn():
        be.probe_pass(seg.master, seg.work, seg.grad, seg.states, sc, h, DIR_V)

    def update_fn():
        be.update_pass(seg.master, seg.work, seg.grad, seg.states, sc, h, DIR_V, seg.inplace)

    pb, ub = qlab_bytes(kind, dt, probe)
    mode = "inplace" if seg.inplace else "copy"
    return Case(impl, kind, dtype, numel, ntensors, mode, (pb + ub) * numel,
                {"probe": probe_fn, "update": update_fn}, keep=[opt, params, sc])


def run_group(specs: list, device, budget_s: float = 1.5, min_rounds: int = 5,
              max_rounds: int = 200, warmup: int = 2, interleave: bool | None = None) -> list:
    """Time several cases of one (kind, dtype, size) group; returns one result dict per spec.

    ``specs``: dicts of ``build`` arguments. Interleaved (default on CPU): every case is built first
    and the rounds alternate between them, rotating the order, so load from other processes hits
    all of them alike and the ratios stay meaningful on a shared machine. Sequential (default on
    CUDA): one case at a time, so the largest sizes fit in memory.
    """
    device = torch.device(device)
    if interleave is None:
        interleave = device.type == "cpu"
    results = [None] * len(specs)

    def prepare(i, spec):
        """Build and warm up one case; None (and its result marked failed) if either raises."""
        case, err = _try_build(spec, device)
        if case is not None:
            try:
                for w in range(warmup):
                    t0 = time.perf_counter()
                    case.run()
                    sync(device)
                    if time.perf_counter() - t0 > 0.5:  # slow case: one warm-up call is enough
                        break
            except Exception as exc:  # noqa: BLE001 - a backend failing at run time: reported
                case, err = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        if err:
            results[i] = _failed(spec, err)
        return case

    if interleave:
        cases = [(i, c) for i, c in ((i, prepare(i, s)) for i, s in enumerate(specs)) if c]
        times = {i: [] for i, _ in cases}
        t0, r = time.perf_counter(), 0
        while cases and _more(r, time.perf_counter() - t0, budget_s, min_rounds, max_rounds):
            k = r % len(cases)
            for i, case in cases[k:] + cases[:k]:
                times[i].append(time_parts(case.parts, device))
            r += 1
        for i, case in cases:
            results[i] = _result(case, times[i])
        del cases
    else:
        for i, spec in enumerate(specs):
            case = prepare(i, spec)
            if case is None:
                continue
            ts, t0 = [], time.perf_counter()
            while _more(len(ts), time.perf_counter() - t0, budget_s / len(specs), min_rounds,
                        max_rounds):
                ts.append(time_parts(case.parts, device))
            results[i] = _result(case, ts)
            del case
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    gc.collect()
    return results


def _more(rounds, elapsed, budget, min_rounds, max_rounds) -> bool:
    """Another round? At least ``min_rounds`` and ``budget`` seconds, except that slow cases
    (the plain-torch backend at 1.6e7 elements) stop after 3 rounds once 4× the budget is spent."""
    if rounds >= max_rounds:
        return False
    if rounds < min_rounds:
        return not (rounds >= 3 and elapsed > 4 * budget)
    return elapsed < budget


def _try_build(spec, device):
    try:
        return build(device=device, **spec), None
    except Exception as exc:  # noqa: BLE001 - e.g. no fused kernel for this dtype: reported
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _failed(spec, err):
    return dict(spec, probe=spec.get("probe", "-"), ntensors=spec.get("ntensors", 1),
                error=err, median_s=None)


def _result(case: Case, ts: list) -> dict:
    parts = {k: median([t[k] for t in ts]) for k in case.parts}
    totals = [sum(t.values()) for t in ts]
    total = median(totals)
    return dict(impl=case.impl, kind=case.kind, dtype=case.dtype, numel=case.numel,
                ntensors=case.ntensors, probe=case.probe, bytes=case.bytes, rounds=len(ts),
                median_s=total, min_s=min(totals), parts_s=parts, gbps=case.bytes / total / 1e9,
                note=case.note)


def add_ratios(results: list, copy_gbps: float, copy_gbps_best: float | None = None) -> list:
    """Fill in %-of-copy-bandwidth, ratio to each torch baseline of the same group (same run) and
    the byte-model floor for that ratio. Also the same from the fastest round of each case
    (``*_min``): on a shared machine the medians carry the other processes' load."""
    groups = {}
    for r in results:
        groups.setdefault((r["kind"], r["dtype"], r["numel"], r["ntensors"]), []).append(r)
    for (kind, dtype, _, _), rs in groups.items():
        base = {r["impl"]: r for r in rs if r["impl"].startswith("torch:") and r.get("median_s")}
        for r in rs:
            if not r.get("median_s"):
                continue
            r["pct_copy"] = 100.0 * r["gbps"] / copy_gbps
            r["gbps_min"] = r["bytes"] / r["min_s"] / 1e9
            r["pct_copy_min"] = 100.0 * r["gbps_min"] / (copy_gbps_best or copy_gbps)
            for b, t in base.items():
                r[f"ratio_{b.split(':')[1]}"] = r["median_s"] / t["median_s"]
                r[f"ratio_{b.split(':')[1]}_min"] = r["min_s"] / t["min_s"]
            if r["impl"].startswith("qlab:"):
                r["floor_ratio"] = floor_ratio(kind, DTYPES[dtype], r["probe"])
    return results
