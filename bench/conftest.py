"""pytest-benchmark suite configuration (run: ``pytest bench/ --benchmark-only``; not part of the
default test run, whose testpaths is ``tests``).

- torch uses 2 threads on CPU (the project machines have 2 cores; more would oversubscribe).
- JSON is saved by default (as ``--benchmark-save=qlab_fused``:
  ``.benchmarks/<machine>/NNNN_qlab_fused.json``) unless ``--benchmark-json``, ``--benchmark-save``
  or ``--benchmark-autosave`` is given. Derived numbers (GB/s, % of the copy bandwidth measured in
  this session, ratio to torch's foreach/fused step of the same group, byte-model floor,
  training-step ratio and its floor 1 + F/(F+B)) go into each benchmark's ``extra_info`` and are
  printed at the end.
- Environment: ``QLAB_BENCH_DEVICE`` (cpu | cuda; default cuda when available), ``QLAB_BENCH_SIZES``
  (comma-separated element counts), ``QLAB_BENCH_BUDGET`` (seconds of timing per benchmark).
"""
import os

import pytest
import torch

from qlab_fused.benchmarking import micro

DEVICE = torch.device(os.environ.get("QLAB_BENCH_DEVICE",
                                     "cuda" if torch.cuda.is_available() else "cpu"))
_DEFAULT_SIZES = {"cpu": "1e5,1e6,4e6,1.6e7", "cuda": "1e5,1e6,1e7,1e8,1e9"}
SIZES = [int(float(s)) for s in os.environ.get("QLAB_BENCH_SIZES",
                                               _DEFAULT_SIZES[DEVICE.type]).split(",")]
BUDGET = float(os.environ.get("QLAB_BENCH_BUDGET", "1.0"))
_COPY = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if DEVICE.type == "cpu":
        torch.set_num_threads(2)
    opt = config.option
    if hasattr(opt, "benchmark_save") and not (opt.benchmark_save or opt.benchmark_autosave
                                               or getattr(opt, "benchmark_json", None)):
        opt.benchmark_save = "qlab_fused"  # .benchmarks/<machine>/NNNN_qlab_fused.json


@pytest.fixture(scope="session")
def device():
    return DEVICE


@pytest.fixture(scope="session")
def copy_gbps():
    """The copy bandwidth of this device, measured once in this session (GB/s, read + write)."""
    if "gbps" not in _COPY:
        _COPY.update(micro.copy_bandwidth(DEVICE))
    return _COPY["gbps"]


def rounds_for(fn, budget=None, lo=5, hi=200):
    """Rounds for ``benchmark.pedantic`` so that one benchmark takes about ``budget`` seconds."""
    import time

    fn()
    micro.sync(DEVICE)
    t0 = time.perf_counter()
    fn()
    micro.sync(DEVICE)
    dt = max(time.perf_counter() - t0, 1e-6)
    return int(min(hi, max(lo, (budget or BUDGET) / dt)))


def derive(rows):
    """Add derived numbers to ``extra_info`` of benchmark rows: dicts with "median" and "extra"."""
    copy = _COPY.get("gbps")
    step = {}
    torch_ref = {}
    for r in rows:
        e = r["extra"]
        if e.get("suite") == "step":
            step.setdefault(e["group"], {})[e["impl"]] = r["median"]
        elif e.get("suite") == "train" and e["mode"] == "torch":
            torch_ref[(e["model"], e["base"])] = (r["median"], e)
    for r in rows:
        e = r["extra"]
        if e.get("suite") == "step":
            e["gbps"] = e["bytes"] / r["median"] / 1e9
            if copy:
                e["copy_gbps"] = copy
                e["pct_copy"] = 100 * e["gbps"] / copy
            for b in micro.BASELINES:
                if b in step[e["group"]]:
                    e[f"ratio_{b.split(':')[1]}"] = r["median"] / step[e["group"]][b]
        elif e.get("suite") == "train" and (e["model"], e["base"]) in torch_ref:
            t, te = torch_ref[(e["model"], e["base"])]
            e["step_ratio"] = r["median"] / t
            e["floor"] = 1 + te["forward"] / (te["forward"] + te["backward"])
    return rows


def _rows_from_json(output_json):
    return [{"median": b["stats"]["median"], "extra": b["extra_info"]}
            for b in output_json.get("benchmarks", [])]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    derive(_rows_from_json(output_json))
    output_json["copy_bandwidth"] = dict(_COPY)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    bs = getattr(getattr(config, "_benchmarksession", None), "benchmarks", None) or []
    rows = [{"median": b.stats.median, "extra": b.extra_info} for b in bs
            if getattr(b, "stats", None) is not None]
    if not rows:
        return
    derive(rows)
    tr = terminalreporter
    tr.write_sep("-", f"qlab_fused derived numbers ({DEVICE}; copy {_COPY.get('gbps', 0):.1f} GB/s)")
    for r in rows:
        e = r["extra"]
        if e.get("suite") == "step":
            floor = f"  floor {e['floor_ratio']:5.2f}" if "floor_ratio" in e else ""
            tr.write_line(f"{e['group']:>28s} {e['impl']:>14s} {e.get('probe', '-'):>7s} "
                          f"{r['median'] * 1e3:9.3f} ms {e['gbps']:7.2f} GB/s "
                          f"{e.get('pct_copy', 0):5.0f}% copy  x fused {e.get('ratio_fused', 0):6.2f}"
                          + floor)
        elif e.get("suite") == "train":
            floor = f"  floor {e['floor']:5.2f}" if e["mode"] != "torch" else ""
            tr.write_line(f"{e['model']:>5s} {e['base']:>5s} {e['mode']:>13s} "
                          f"{r['median'] * 1e3:9.2f} ms  x torch {e.get('step_ratio', 0):5.2f}"
                          + floor)
