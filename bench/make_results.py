"""Compose ``bench/RESULTS.md`` from one or more ``python -m qlab_fused bench`` output folders.

    python bench/make_results.py FULL [--notes bench/results/notes.md] [--focus F1 [F2 ...]] \
        > bench/RESULTS.md
    cp FULL/*.png FULL/results.json bench/results/

FULL is a default run (its report is included). The issue-4 goal table comes from the first
``--focus`` run if given (a longer-timed run at 1.6e7 only:
``python -m qlab_fused bench --sizes 1.6e7 --dtypes fp32 --many 0 --models '' --budget 6``), else
from FULL; the other runs (focus runs and FULL) are listed as re-runs so the spread between runs
on a shared machine is visible.
"""
import json
import os
import sys

GOALS = [  # (label, kind, impl, probe, baseline key, target ratio)
    ("QLAB-Adam probe+update / torch Adam(fused=True).step()", "adam", "inplace", "ratio_fused",
     1.65),
    ("QLAB-SGD probe+update / torch SGD(fused=True).step()", "sgd", "inplace", "ratio_fused", 2.1),
    ("QLAB-SGD probe+update / torch SGD(foreach=True).step()", "sgd", "inplace", "ratio_foreach",
     2.1),
]


def _load(d):
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


def _find(rec, kind, impl, probe, numel):
    for r in rec["micro"]:
        if (r["kind"], r["impl"], r["probe"], r["dtype"], r["numel"], r["ntensors"]) == (
                kind, impl, probe, "fp32", numel, 1) and r.get("median_s"):
            return r
    return None


def goals(recs) -> str:
    rec = recs[0]
    n = max(r["numel"] for r in rec["micro"] if r["ntensors"] == 1)
    lines = [f"At N = {n:.3g} fp32 elements (one tensor), copy bandwidth "
             f"{rec['copy_gbps']:.1f} GB/s measured in the same run:", "",
             "| quantity | backend | measured | target (issue 4) | byte floor | re-runs |",
             "|---|---|---|---|---|---|"]
    for label, kind, probe, key, target in GOALS:
        for impl in ("qlab:cpu", "qlab:torch"):
            r = _find(rec, kind, impl, probe, n)
            if r is None or key not in r:
                continue
            again = [_find(x, kind, impl, probe, n) for x in recs[1:]]
            again = ", ".join(f"{a[key]:.2f}" for a in again if a and key in a) or "–"
            lines.append(f"| {label} | {impl.split(':')[1]} | {r[key]:.2f}× | "
                         f"≤ {target}× | {r['floor_ratio']:.2f}× | {again} |")
    for impl in ("qlab:cpu", "qlab:torch"):
        r = _find(rec, "adam", impl, "inplace", n)
        if r:
            again = [_find(x, "adam", impl, "inplace", n) for x in recs[1:]]
            again = ", ".join(f"{a['pct_copy']:.0f}%" for a in again if a) or "–"
            lines.append(f"| QLAB-Adam GB/s (11N·4 B model) as % of copy bandwidth | "
                         f"{impl.split(':')[1]} | {r['gbps']:.1f} GB/s = {r['pct_copy']:.0f}% | "
                         f"≥ 75% | – | {again} |")
    return "\n".join(lines)


def main(argv) -> int:
    notes = None
    if "--notes" in argv:  # a hand-written markdown section: how to read the numbers
        i = argv.index("--notes")
        with open(argv[i + 1]) as f:
            notes = f.read()
        argv = argv[:i] + argv[i + 2:]
    full, focus = argv[0], []
    if "--focus" in argv:
        focus = argv[argv.index("--focus") + 1:]
    recs = [_load(d) for d in [full] + focus]
    goal_recs = recs[1:] + recs[:1] if focus else recs
    with open(os.path.join(full, "report.md")) as f:
        body = f.read()
    body = body.split("\n", 1)[1]  # drop the report's title
    body = body.replace("## ", "### ")
    for img in ("gbps.png", "step_breakdown.png"):  # copied next to RESULTS.md by the caller
        body = body.replace(f"]({img})", f"](results/{img})")
    m = recs[0]["machine"]
    print("# Benchmark results\n")
    print(f"Latest run: {recs[0]['date']}. Machine: {m['cpu']}, {m['cores']} cores "
          f"(torch threads {m['threads']}), shared with other builds and tests while measured, so "
          f"single numbers are noisy; ratios come from interleaved rounds of the same run. "
          f"Versions: python {m['python']}, torch {m['torch']}, triton {m['triton']}.\n")
    print("Reproduce: `python -m qlab_fused bench --out DIR` (under 10 minutes here) or "
          "`pytest bench/ --benchmark-only` (pytest-benchmark JSON in `.benchmarks/`); "
          "`python bench/make_results.py DIR > bench/RESULTS.md` (plots and JSON of this run: "
          "`bench/results/`).\n")
    print("## Issue-4 goals for the C++ `cpu` backend\n")
    print(goals(goal_recs) + "\n")
    if notes:
        print(notes.strip() + "\n")
    gpu_md = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "h200", "gpu.md")
    goal_line = (f"Goal table: {'focus run ' + goal_recs[0]['date'] if focus else 'the full run'}; "
                 f"re-runs: the other runs, in order.\n")
    print(goal_line)
    if os.path.exists(gpu_md):  # written by hand from a GPU lease (bench/gpu_check.sh)
        with open(gpu_md) as f:
            print(f.read().strip() + "\n")
    else:
        print("## GPU: not measured; run bench/gpu_check.sh\n")
        print("On a GPU machine, from the repository root: `bash bench/gpu_check.sh` (with the "
              "device tool: `run(command='bash bench/gpu_check.sh', carry=['.whl'], "
              "timeout_s=580)`); it installs the package without network, runs the CUDA and "
              "Triton tests, the sync/graph checks and `python -m qlab_fused bench --device "
              "cuda`, and writes its files under `$OUT`.\n")
    print("## Full report of the latest CPU run\n")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
