"""Run the quality protocol (SPEC §8) on one or more tasks and write JSON under bench/quality/results/.

    python -m bench.quality.run --task digits_mlp --quick          # 1 seed, α₀ ∈ {1e-4, 1e-2, 1}
    python -m bench.quality.run --task all --suite main           # the full protocol
    python -m bench.quality.run --task all --suite ablation --rules paper,stale
    python -m bench.quality.run --task selection --bases qlab_momentum --merge   # its main runs again

Suites: ``main`` = plain SGD/Momentum/Adam over the lr grid, QLAB-X with the default rule over the
α₀ grid, and the learning-rate-free peers; ``ablation`` = QLAB-X with each rule of ``--rules``;
``past_edge`` = plain X a decade past the lrs run so far wherever the stored runs' best is the
largest (smallest) lr run, again until it is not (bench/quality/past_edge.py; results merged into
the tag's file, default tag ``past_edge``).
``--merge`` replaces only the runs it makes (same task, seed, method, lr/α₀ and rule) in an existing
results file and keeps the others; without it a task's file is written anew.
Workers run single-threaded (torch.set_num_threads(1)); at most 2 in parallel on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SEEDS = (0, 1, 2)
BASES = ("sgd", "momentum", "adam")
PEERS = ("dadapt_adam", "dadapt_sgd", "prodigy", "sf_adamw", "sf_sgd")
RESULTS = Path(__file__).resolve().parent / "results"
N_CURVE = 60  # points kept of each curve (α, batch loss)


def make_optimizer(method: str, params, lr: float, rule: str | None):
    import torch
    import qlab_fused as qf
    if method == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if method == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if method == "adam":
        return torch.optim.Adam(params, lr=lr)
    kw = dict(backend="torch") if rule is None else dict(backend="torch", rule=rule)  # None: "auto"
    if method == "qlab_sgd":
        return qf.QLABSGD(params, alpha0=lr, **kw)
    if method == "qlab_momentum":
        return qf.QLABSGD(params, alpha0=lr, momentum=0.9, **kw)
    if method == "qlab_adam":
        return qf.QLABAdam(params, alpha0=lr, **kw)
    if method == "dadapt_adam":
        import dadaptation
        return dadaptation.DAdaptAdam(params, lr=1.0)
    if method == "dadapt_sgd":
        import dadaptation
        return dadaptation.DAdaptSGD(params, lr=1.0, momentum=0.9)
    if method == "prodigy":
        import prodigyopt
        return prodigyopt.Prodigy(params, lr=1.0)
    if method == "sf_adamw":
        import schedulefree
        return schedulefree.AdamWScheduleFree(params)  # its default lr 0.0025
    if method == "sf_sgd":
        import schedulefree
        return schedulefree.SGDScheduleFree(params)    # its default lr 1.0, momentum 0.9
    raise ValueError(method)


def _sub(xs, n=N_CURVE):
    if len(xs) <= n:
        return xs
    idx = [round(i * (len(xs) - 1) / (n - 1)) for i in range(n)]
    return [xs[i] for i in idx]


def run_one(job: dict, wrap=None) -> dict:
    """One training run; returns the final metrics and subsampled curves. ``wrap(model)``, if given,
    returns the module to train in the task's model's place (bench/quality/bf16.py: a bf16 cast)."""
    import torch
    torch.set_num_threads(1)
    from bench.quality.tasks import TASKS
    task = TASKS[job["task"]](job["seed"])
    model = task.model if wrap is None else wrap(task.model)
    params = [p for p in model.parameters()]
    method, lr, rule = job["method"], job["lr"], job.get("rule")
    opt = make_optimizer(method, params, lr, rule)
    qlab = method.startswith("qlab_")
    sf = method.startswith("sf_")
    if sf:
        opt.train()
    alphas, losses, full = [], [], []
    t0 = time.perf_counter()
    for x, y in task.batches():
        if qlab:
            L = opt.step(lambda: task.loss(model, x, y))
            alphas.append(float(opt.alpha))
        else:
            opt.zero_grad()
            L = task.loss(model, x, y)
            L.backward()
            opt.step()
        losses.append(float(L.detach()))
        if task.full_batch:  # the full-batch loss after the step, float64
            with torch.no_grad():
                full.append(float(task.loss(model, x, y)))
    wall = time.perf_counter() - t0
    if sf:
        opt.eval()
    train = task.train_loss(model)
    metric, value = task.test_metric(model)
    out = dict(job, final_train_loss=train if math.isfinite(train) else None, test_metric=metric,
               test_value=value if math.isfinite(value) else None, wall_s=wall, steps=len(losses),
               loss_curve=_sub([v if math.isfinite(v) else None for v in losses]))
    if qlab:
        out["alpha_curve"] = _sub(alphas)
        out["alpha_median"] = sorted(alphas)[len(alphas) // 2]
        out["zero_steps"] = sum(a == 0 for a in alphas)
    if task.full_batch:
        start = losses[0]
        seq = [start] + full
        rises = [(b - a) / abs(a) for a, b in zip(seq, seq[1:])]
        out["max_rel_increase"] = max(rises) if rises else 0.0
    return out


def set_edge(edge: float) -> None:
    """Every `_edge` rule's band [m, edge·m] in this process and the workers it forks."""
    from qlab_fused import reference
    for r in reference.EDGE_OF:
        reference.EDGE_OF[r] = edge


def run_key(r: dict) -> tuple:
    """What identifies a run within one results file."""
    return (r["task"], r["seed"], r["method"], r["lr"], r.get("rule"))


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with every run that ``new`` re-made replaced by the new one, in ``old``'s order;
    new runs with no old counterpart are appended."""
    fresh = {run_key(r): r for r in new}
    out = [fresh.pop(run_key(r), r) for r in old]
    return out + [r for r in new if run_key(r) in fresh]


# How far past the grid `past_edge` goes: a best lr still at the edge there is reported as such.
PAST_EDGE_LIMITS = (1e-7, 1e3)


def past_edge_jobs(task: str, seeds, bases, runs) -> list[dict]:
    """The plain runs a decade past the edge of those stored (``runs``: every tag's) for each
    (seed, base) whose best lr is the largest or smallest of its lrs run, inside PAST_EDGE_LIMITS.
    A diverged run (loss None) counts as infinitely bad, so one past the edge ends the search."""
    from bench.quality.analyze import _loss  # analyze imports this module
    jobs = []
    for seed in seeds:
        for base in bases:
            tried = {}
            for r in runs:
                if (r["task"], r["method"], r["seed"]) == (task, base, seed):
                    tried[r["lr"]] = min(tried.get(r["lr"], math.inf), _loss(r))
            if len(tried) < 2:
                continue
            best = min(sorted(tried), key=tried.get)  # ties go to the smaller lr
            for edge, step in ((max(tried), 10.0), (min(tried), 0.1)):
                lr = float(f"{best * step:.1g}")  # 10.0, not 10.000000000000002
                if best == edge and PAST_EDGE_LIMITS[0] <= lr <= PAST_EDGE_LIMITS[1]:
                    jobs.append(dict(task=task, seed=seed, method=base, lr=lr))
    return jobs


def jobs_for(task: str, suite: str, rules: list[str], seeds, grid) -> list[dict]:
    jobs = []
    for seed in seeds:
        if suite == "main":
            for base in BASES:
                for lr in grid:
                    jobs.append(dict(task=task, seed=seed, method=base, lr=lr))
                    jobs.append(dict(task=task, seed=seed, method="qlab_" + base, lr=lr, rule=None))
            for peer in PEERS:
                jobs.append(dict(task=task, seed=seed, method=peer, lr=1.0))
        elif suite == "baselines":
            for base in BASES:
                for lr in grid:
                    jobs.append(dict(task=task, seed=seed, method=base, lr=lr))
        else:
            for rule in rules:
                for base in BASES:
                    for lr in grid:
                        jobs.append(dict(task=task, seed=seed, method="qlab_" + base, lr=lr,
                                         rule=rule))
    return jobs


def run_past_edge(task: str, seeds, bases, tag: str, workers: int, runs: list[dict]) -> None:
    """The `past_edge` suite on one task: decade by decade until no best lr is at an edge, each
    round's runs merged into the tag's file and appended to ``runs`` (every stored run, as
    bench.quality.analyze.load returns them, read once for all tasks)."""
    path = RESULTS / f"{task}__{tag}.json"
    total = 0
    while jobs := past_edge_jobs(task, seeds, bases, runs):
        t0 = time.perf_counter()
        with get_context("fork").Pool(workers) as pool:
            res = list(pool.imap_unordered(run_one, jobs))
        wall = time.perf_counter() - t0
        old = json.loads(path.read_text()) if path.exists() else dict(wall_s=0.0, runs=[])
        path.write_text(json.dumps(dict(task=task, suite="past_edge", workers=workers,
                                        wall_s=old["wall_s"] + wall, runs=merged(old["runs"], res)),
                                   separators=(",", ":")))
        runs.extend(dict(r, tag=tag) for r in res)
        total += len(jobs)
        print(f"  {task}: {len(jobs)} runs at " + ", ".join(sorted({f"{j['lr']:g}" for j in jobs}))
              + f" in {wall:.0f}s", file=sys.stderr, flush=True)
    where = f" -> {path}" if total else ""
    print(f"{task}: {total} runs past the grid's edge{where}", flush=True)


def main(argv=None):
    from bench.quality.tasks import SELECTION, TASKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="all", help="task name, comma list, 'all', or 'selection' (the "
                    "tasks the defaults are chosen on, no held-out one): " + ", ".join(TASKS))
    ap.add_argument("--suite", default="main",
                    choices=["main", "ablation", "baselines", "past_edge"])
    ap.add_argument("--rules", default="safeguarded,paper,fresh,stale,alternate")
    ap.add_argument("--bases", default=",".join(BASES + ("peers",)),
                    help="which of sgd, momentum, adam (plain and QLAB), qlab_sgd, qlab_momentum, "
                         "qlab_adam (QLAB only) and peers to run")
    ap.add_argument("--quick", action="store_true", help="1 seed, α₀ ∈ {1e-4, 1e-2, 1}")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2; a fresh-seed check: "
                    "give it its own --tag, the report reads only the main and ablation tags)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tag", default=None, help="results file suffix (default: the suite)")
    ap.add_argument("--edge", type=float, default=None,
                    help="prototype: the `_edge` rules with this band width instead of their own "
                         "(log item 37's sweep); their runs are labelled <rule>@EDGE=<x>, a name no "
                         "choice takes for the library rule")
    ap.add_argument("--merge", action="store_true", help="replace these runs in the tag's existing "
                    "files and keep the rest (default: write each task's file anew)")
    args = ap.parse_args(argv)
    tasks = (list(TASKS) if args.task == "all" else list(SELECTION) if args.task == "selection"
             else args.task.split(","))
    seeds, grid = ((0,), (1e-4, 1e-2, 1.0)) if args.quick else (SEEDS, GRID)
    if args.seeds:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    rules = args.rules.split(",")
    bases = args.bases.split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.edge is not None:
        set_edge(args.edge)
    if args.suite == "past_edge":
        from bench.quality.analyze import load  # analyze imports this module
        runs = load()
        for task in tasks:
            run_past_edge(task, seeds, [b for b in BASES if b in bases], args.tag or "past_edge",
                          args.workers, runs)
        return
    for task in tasks:
        jobs = [j for j in jobs_for(task, args.suite, rules, seeds, grid)
                if j["method"] in bases or j["method"].replace("qlab_", "") in bases
                or (j["method"] in PEERS and "peers" in bases)]
        t0 = time.perf_counter()
        ctx = get_context("fork")
        with ctx.Pool(args.workers) as pool:
            res = []
            for i, r in enumerate(pool.imap_unordered(run_one, jobs)):
                res.append(r)
                if (i + 1) % 20 == 0:
                    print(f"  {task}: {i + 1}/{len(jobs)}", file=sys.stderr, flush=True)
        wall = time.perf_counter() - t0
        if args.edge is not None:
            res = [dict(r, rule=f"{r['rule']}@EDGE={args.edge:g}") for r in res]
        tag = args.tag or args.suite + ("_quick" if args.quick else "")
        path = RESULTS / f"{task}__{tag}.json"
        out = dict(task=task, suite=args.suite, wall_s=wall, workers=args.workers)
        if args.merge and path.exists():  # the file's wall time stays the whole protocol's
            old = json.loads(path.read_text())
            out = {k: v for k, v in old.items() if k != "runs"}
            out["merges"] = old.get("merges", []) + [dict(wall_s=wall, runs=len(res))]
            res = merged(old["runs"], res)
        path.write_text(json.dumps(dict(out, runs=res), separators=(",", ":")))
        print(f"{task}: {len(jobs)} runs in {wall:.0f}s -> {path}", flush=True)


if __name__ == "__main__":
    main()
