"""``python -m qlab_fused bench``: optimizer-step microbenchmarks and whole training-step profiles,
printed as tables and written as a markdown report, JSON and PNG plots to ``--out DIR``.

    python -m qlab_fused bench --out bench_out            # default sizes: < 10 min on 2 CPU cores
    python -m qlab_fused bench --quick --out /tmp/b       # seconds: the code path, not the numbers
    python -m qlab_fused bench --device cuda --out gpu    # GPU sizes up to 1e9 elements

The work is in ``qlab_fused.benchmarking``; the pytest-benchmark suite in ``bench/`` shares it.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys

import torch

from .benchmarking import micro, models, report

DEFAULT_SIZES = {"cpu": "1e5,1e6,4e6,1.6e7", "cuda": "1e5,1e6,1e7,1e8,1e9"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qlab_fused bench",
        description="Optimizer-step microbenchmarks and whole training-step profiles: tables on "
                    "stdout, report.md + results.json + PNG plots in --out.")
    p.add_argument("--out", default="qlab_bench", help="folder for report.md, results.json, *.png")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--sizes", help="comma-separated element counts, e.g. 1e5,1.6e7 (default: "
                   + "; ".join(f"{k}: {v}" for k, v in DEFAULT_SIZES.items()) + ")")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, tiny models, few rounds: checks the pipeline in seconds")
    p.add_argument("--kinds", default=",".join(micro.KINDS), help="sgd,momentum,adam")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (bf16 work, fp32 master)")
    p.add_argument("--probes", default="inplace,copy", help="fp32 probe modes (bf16 is always copy)")
    p.add_argument("--backends", default="all", help="QLAB backends to time (default: all usable)")
    p.add_argument("--many", type=int, default=200, help="tensors in the many-small-tensors case "
                   "(0: skip)")
    p.add_argument("--many-numel", type=float, default=1e6,
                   help="elements in all, many-small-tensors case")
    p.add_argument("--models", default=",".join(models.MODELS), help="'' to skip the step profiles")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per config")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per size group")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    return p


def _specs(args, device) -> list:
    """Groups of build() arguments: one group per (kind, dtype, size, tensor count)."""
    avail = micro.impls(device)
    want = None if args.backends == "all" else {f"qlab:{b}" for b in args.backends.split(",")}
    qlab = [i for i, why in avail.items() if why is None and i.startswith("qlab:")
            and (want is None or i in want)]
    sizes = [int(float(s)) for s in (args.sizes or DEFAULT_SIZES[device.type]).split(",")]
    probes = args.probes.split(",")
    groups = []
    shapes = [(n, 1) for n in sizes]
    if args.many:
        shapes.append((int(args.many_numel), args.many))
    for n, nt in shapes:
        for dtype in args.dtypes.split(","):
            if nt > 1 and dtype != "fp32":
                continue
            for kind in args.kinds.split(","):
                g = [dict(impl=b, kind=kind, dtype=dtype, numel=n, ntensors=nt)
                     for b in micro.BASELINES]
                for q in qlab:
                    for pr in (probes if dtype == "fp32" else ["copy"]):
                        g.append(dict(impl=q, kind=kind, dtype=dtype, numel=n, ntensors=nt,
                                      probe=pr))
                groups.append(g)
    return groups, avail


def _why(exc) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def _progress(timed) -> None:
    """One stdout line per timed case as soon as its group ends: a run cut short by a time limit
    (a lent GPU machine) still leaves its numbers in the log."""
    for r in timed:
        what = (f"median {r['median_s'] * 1e3:.4g} ms, {r['gbps']:.4g} GB/s" if r.get("median_s")
                else f"not timed ({r.get('error')})")
        print(f"timed {r['impl']} {r['kind']} {r['dtype']} N={r['numel']:.3g} x{r['ntensors']} "
              f"probe={r['probe']}: {what}", flush=True)


def run(args) -> dict:
    from tqdm import tqdm

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    quick = args.quick
    if quick:
        args.sizes = args.sizes or "1e4"
        args.many_numel = min(args.many_numel, 1e4)
        args.many = min(args.many, 20)
    budget = args.budget if args.budget is not None else (0.01 if quick else 1.0)
    steps = args.steps if args.steps is not None else (2 if quick else 8)
    groups, avail = _specs(args, device)
    model_names = [m for m in args.models.split(",") if m]
    bases = ("sgd", "adam")
    notes = [f"{i}: {why}" for i, why in avail.items() if why is not None]
    bar = tqdm(total=2 + len(groups) + len(model_names) * len(bases), desc="bench", unit="task",
               file=sys.stderr, dynamic_ncols=True)
    copy = {}
    bar.set_postfix_str("copy bandwidth")
    copy["start"] = micro.copy_bandwidth(device, numel=(1 << 22) if quick else None,
                                         reps=3 if quick else 10)
    bar.update(1)
    # Training steps and small sizes first, the largest sizes last: a fault there (on a GPU, a
    # sticky CUDA error) then costs only what comes after it, and every failure is reported.
    steps_res = []
    for m in model_names:
        for base in bases:
            bar.set_postfix_str(f"{m} {base}")
            try:
                steps_res += models.profile(m, base, device=device, steps=steps,
                                            warmup=1 if quick else 3,
                                            scale="tiny" if quick else "full")
            except Exception as exc:  # noqa: BLE001 - reported in the notes, the run goes on
                notes.append(f"training step {m} {base}: failed ({_why(exc)})")
            bar.update(1)
    results = []
    for g in sorted(groups, key=lambda g: (g[0]["ntensors"] == 1, g[0]["numel"])):
        s = g[0]
        bar.set_postfix_str(f"{s['kind']} {s['dtype']} N={s['numel']:.2g} x{s['ntensors']}")
        try:
            timed = micro.run_group(g, device, budget_s=budget, min_rounds=3 if quick else 5,
                                    warmup=1 if quick else 2)
        except Exception as exc:  # noqa: BLE001 - e.g. a kernel fault while timing
            timed = [micro._failed(spec, _why(exc)) for spec in g]
        results += timed
        _progress(timed)
        bar.update(1)
    bar.set_postfix_str("copy bandwidth")
    try:
        copy["end"] = micro.copy_bandwidth(device, numel=(1 << 22) if quick else None,
                                           reps=3 if quick else 10)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"final copy-bandwidth measurement failed ({_why(exc)})")
    bar.update(1)
    bar.close()
    kinds, dtypes = list(micro.KINDS), list(micro.DTYPES)
    results.sort(key=lambda r: (r["ntensors"] > 1, r["numel"], dtypes.index(r["dtype"]),
                                kinds.index(r["kind"])))  # stable: impls keep their order
    copy_gbps = max(c["gbps"] for c in copy.values())
    copy_best = max(c["gbps_best"] for c in copy.values())
    micro.add_ratios(results, copy_gbps, copy_best)
    models.add_ratios(steps_res)
    for r in results:
        if r.get("error"):
            notes.append(f"{r['impl']} {r['kind']} {r['dtype']} N={r['numel']}: not timed "
                         f"({r['error']})")
    impls = sorted({(r['base'], r['impl']) for r in steps_res if r['mode'] == 'torch'})
    notes += [
        "torch baselines: torch.optim.SGD / Adam with foreach=True and with fused=True, on identical "
        "tensors (same seed and shapes); SGD means momentum 0, Momentum means momentum 0.9.",
        "QLAB microbenchmarks time probe_pass + update_pass on the optimizer's segment with a fixed "
        "sc vector (no rule, no forward): optimizer work against optimizer work.",
        "training-step baselines: " + ", ".join(f"{b}: {i}" for b, i in impls) + ".",
        ("memory: 'tensor MB' counts the distinct storages of parameters, gradients and optimizer "
         "state (QLAB: its flat buffers) — allocated tensor bytes, not process RSS. "
         + ("'peak MB' is torch.cuda.max_memory_allocated over two steps of that configuration "
            "alone." if device.type == "cuda" else
            "'peak MB' is not measured on CPU (no allocator statistics), hence –.")),
        "'best' columns use the fastest round of each case (and of the copy): on a shared machine "
        "the medians include other processes' load, the fastest rounds less so.",
        "quick run: tiny sizes and models; the numbers show the pipeline works, not the speed."
        if quick else "default run.",
    ]
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(device), "machine": report.machine(device),
            "command": "python -m qlab_fused bench " + " ".join(map(shlex.quote, args.argv)),
            "copy": copy, "copy_gbps": copy_gbps, "copy_gbps_best": copy_best, "micro": results, "steps": steps_res,
            "notes": notes}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    record = run(args)
    report.print_tables(record)
    files = report.write_all(record, args.out)
    print(f"\nwrote {args.out}/{files['report']}, {files['json']}, " + ", ".join(files["images"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
