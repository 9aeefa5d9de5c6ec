"""Stored runs made again on this machine: do they come out bit for bit?

    python -m bench.quality.remake --task selection --seeds 0                # plain X at its best grid lr
    python -m bench.quality.remake --task selection --seeds 0 --default      # and the QLAB defaults
    python -m bench.quality.remake --task adding_rnn,digits_mlp --perturb 1e-6 --copies 4
    python -m bench.quality.remake --task adding_rnn --perturb 1e-6 --default --alpha0 0.01
    python -m bench.quality.remake --task selection --seeds 0,1,2 --grid   # the bar's runs, here
    python -m bench.quality.remake --task selection --seeds 3,4,5 --grid   # the six-seed counts'
    python -m bench.quality.remake --read      # the headline with them in the stored runs' place
    python -m bench.quality.remake --read --seeds 0,1,2   # the headline's seeds only

The bar's denominators (plain X at its best grid lr) were made in the round that brought each task
in, some on other machines than today's; a run re-made here can differ in the last bits of a float
reduction, and training can grow that difference. This re-makes, per (task, seed, base), plain X at
the lr that is best among the stored grid runs (and with ``--default`` QLAB-X's default at every α₀
stored), compares the final train loss with the stored one, and says how many runs match exactly,
the largest relative difference, and whether any (task, base) cell of the bar (every stored default
run within BAR of the best) would change if the re-made best stood in the stored one's place. Only
the best lr is re-made: another grid lr, re-made, might become the best (not read).

``--grid`` re-makes every run the headline reads (plain X at each grid lr, QLAB-X's default at each
α₀) and stores them under results/remade/ with the machine they were made on, outside the stored
bar (seeds 0-2 in <task>.json, another seed set in its own file); ``--read`` then prints the
headline's counts with them in the stored runs' place, over every seed re-made (or ``--seeds``).

``--perturb EPS --copies K`` asks how much of that is rounding: K copies of each plain run (with
``--default`` of each default's run too, ``--alpha0`` picking its α₀), each from parameters
multiplied by 1 + EPS·z (z ~ N(0, 1), its own generator per copy, so the batches, dropout masks and
everything else are the run's), printed as the spread of their final train loss over the
unperturbed run's, and per kind (plain X, the defaults) the median and widest spread.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import torch

from bench.quality.analyze import _loss, best_plain, load, made_with, ratios, rule_of
from bench.quality.choose import BAR, CHOICE_SEEDS
from bench.quality.interpolation import KINDS
from bench.quality.run import BASES, GRID, RESULTS, SEEDS, run_one
from qlab_fused.reference import resolve_rule


DEFAULTS = {"qlab_" + b: resolve_rule("auto", KINDS[b]) for b in BASES}
REMADE = RESULTS / "remade"  # analyze.load reads results/*.json only: these never enter the bar


def _is_default(r) -> bool:
    return r["method"] in DEFAULTS and rule_of(r, DEFAULTS) == DEFAULTS[r["method"]]


def _key(r) -> tuple:
    return (r["task"], r["seed"], r["method"], r["lr"])


def _rel(old: float, new: float) -> float:
    """|new / old - 1|; 0 where both are the same (an infinite loss too), inf where one is not
    finite."""
    if old == new:
        return 0.0
    return abs(new / old - 1) if old and math.isfinite(old) and math.isfinite(new) else math.inf


def _default_jobs(runs, tasks, seeds) -> list[dict]:
    """Every stored run of QLAB-X's default rule on ``tasks`` × ``seeds``, once each."""
    out, seen = [], set()
    for r in runs:
        if _is_default(r) and r["task"] in tasks and r["seed"] in seeds and _key(r) not in seen:
            seen.add(_key(r))
            out.append(dict(task=r["task"], seed=r["seed"], method=r["method"], lr=r["lr"],
                            rule=DEFAULTS[r["method"]]))
    return out


def jobs(runs, tasks, seeds, default: bool) -> list[dict]:
    """The runs to re-make: plain X at its best grid lr per (task, base, seed) of ``tasks`` ×
    ``seeds``, and with ``default`` every stored run of QLAB-X's default rule there."""
    best = best_plain(runs)
    out = [dict(task=t, seed=s, method=b, lr=best[(t, b, s)][1], rule=None)
           for t in tasks for b in BASES for s in seeds if (t, b, s) in best]
    return out + (_default_jobs(runs, tasks, seeds) if default else [])


def grid_jobs(runs, tasks, seeds, methods) -> list[dict]:
    """Every run the bar reads on ``tasks`` × ``seeds``, of the ``methods`` given: plain X at each
    lr of the grid stored, and QLAB-X's default at each α₀ stored."""
    plain = sorted({_key(r) for r in runs if r["method"] in BASES and r["method"] in methods
                    and r["lr"] in GRID and r["task"] in tasks and r["seed"] in seeds})
    out = [dict(task=t, seed=s, method=m, lr=lr, rule=None) for t, s, m, lr in plain]
    return out + [j for j in _default_jobs(runs, tasks, seeds) if j["method"] in methods]


def machine() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def remade_path(out: Path, task: str, seeds) -> Path:
    """Where ``remake_grid`` writes ``task``'s runs at ``seeds``: <task>.json for the main suite's
    seeds, <task>__seeds<first>-<last>.json (or a comma list) for another seed set, so that
    re-making one seed set leaves another's file as it was."""
    seeds = sorted(seeds)
    if tuple(seeds) == tuple(SEEDS):
        return out / f"{task}.json"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return out / f"{task}__seeds{seeds[0]}-{seeds[-1]}.json"
    return out / f"{task}__seeds{','.join(map(str, seeds))}.json"


def remake_grid(runs, tasks, seeds, methods, workers: int = 2, out: Path = REMADE) -> None:
    """Re-make ``grid_jobs`` task by task and write each task's runs to ``remade_path``, with the
    machine and torch version they were made with (that file is written anew)."""
    out.mkdir(parents=True, exist_ok=True)
    made_on = dict(machine=machine(), torch=torch.__version__, workers=workers)
    for task in tasks:
        todo = grid_jobs(runs, [task], seeds, methods)
        t0 = time.perf_counter()
        with get_context("fork").Pool(workers) as pool:
            res = list(pool.imap_unordered(run_one, todo))
        wall = time.perf_counter() - t0
        meta = dict(task=task, **made_on, wall_s=wall)
        text = json.dumps(dict(meta, runs=res), separators=(",", ":"))
        remade_path(out, task, seeds).write_text(text)
        print(f"{task}: {len(todo)} runs re-made in {wall:.0f}s", flush=True)


def stored(runs, job) -> float:
    """The stored final train loss of ``job``'s run (the least where several tags hold it, as
    best_plain reads them)."""
    found = [_loss(r) for r in runs if _key(r) == _key(job)
             and (job["rule"] is None or rule_of(r, DEFAULTS) == job["rule"])]
    if not found:
        raise KeyError(job)
    return min(found)


def compare(runs, remade: list[dict]) -> dict:
    """Counts over the re-made runs against the stored ones, and the bar's (task, base) cells whose
    standing flips when a re-made best of plain X replaces the stored best (the stored defaults'
    runs against it; where the defaults were re-made too, their re-made losses); ``pairs`` holds
    each re-made run with its stored and its re-made final loss."""
    exact, worst, where = 0, 0.0, None
    now, pairs = {}, []
    for r in remade:
        old, new = stored(runs, r), _loss(r)
        pairs.append((r, old, new))
        now[_key(r)] = new
        if old == new:
            exact += 1
            continue
        d = _rel(old, new)
        if d > worst:
            worst, where = d, (r["task"], r["method"], r["seed"], r["lr"])
    best = best_plain(runs)
    seeds, tasks = {x["seed"] for x in remade}, {x["task"] for x in remade}
    held = {}  # (task, base) -> [stored standing, re-made standing]
    for r in runs:
        if not _is_default(r) or r["seed"] not in seeds or r["task"] not in tasks:
            continue
        base = r["method"][5:]
        key = (r["task"], base, r["seed"])
        if key not in best:
            continue
        lr = best[key][1]
        plain_now = now.get((r["task"], r["seed"], base, lr), best[key][0])
        q_now = now.get(_key(r), _loss(r))
        cell = held.setdefault((r["task"], base), [True, True])
        cell[0] &= _loss(r) / best[key][0] <= BAR
        cell[1] &= q_now / plain_now <= BAR
    flips = sorted(k for k, (a, b) in held.items() if a != b)
    return dict(runs=len(remade), exact=exact, worst=worst, where=where, flips=flips, pairs=pairs)


def bar_runs(runs, seeds=CHOICE_SEEDS) -> list[dict]:
    """The runs the bar reads at ``seeds``, one per (task, seed, method, lr): plain X at each grid
    lr (where several tags hold a run, the least final loss, as best_plain reads them) and QLAB-X's
    default at each α₀ as bench.quality.choose.gather reads it (analyze.made_with: a run naming
    the rule before the main suite's unnamed one), read, as the main suite's are, without a rule
    name."""
    runs = [r for r in runs if r["seed"] in seeds]
    plain = {}
    for r in runs:
        k = _key(r)
        if r["method"] in BASES and r["lr"] in GRID:
            if k not in plain or _loss(r) < _loss(plain[k]):
                plain[k] = r
    default = [dict(r, rule=None) for (method, rule, *_), r in made_with(runs, DEFAULTS).items()
               if rule == DEFAULTS.get(method)]
    return list(plain.values()) + default


def load_remade(src: Path = REMADE) -> list[dict]:
    """Every run ``remake_grid`` wrote, each with its file's machine and torch version."""
    out = []
    for path in sorted(src.glob("*.json")):
        data = json.loads(path.read_text())
        out += [dict(r, machine=data["machine"], torch=data["torch"]) for r in data["runs"]]
    return out


def one_machine(bar, remade) -> list[dict]:
    """The bar's runs (the main suite's, or ``bar_runs``) with each re-made one in its stored run's
    place (a re-made default's run read, as the main suite's are, as the default's)."""
    new = {_key(r): dict(r, rule=None) if r["method"] in DEFAULTS else r for r in remade}
    return [new.get(_key(r), r) for r in bar]


def standing(bar, tasks, seeds) -> dict:
    """The headline's reading of the bar's runs ``bar`` (the main suite's, or ``bar_runs``; the
    default's without a rule name) on ``tasks`` × ``seeds``: per base, the default's runs within
    BAR of X at its best grid lr, how many runs, the (task, base) cells whose every run is within,
    and each cell's worst ratio."""
    bar = [r for r in bar if r["task"] in tasks and r["seed"] in seeds]
    worst = {}
    out = {b: dict(within=0, runs=0, cells=0) for b in BASES}
    for (task, base, _), rs in ratios(bar, None).items():
        out[base]["within"] += sum(x <= BAR for x in rs)
        out[base]["runs"] += len(rs)
        worst[(task, base)] = max(worst.get((task, base), 0.0), max(rs))
    for (task, base), w in worst.items():
        out[base]["cells"] += w <= BAR
    return dict(out, worst=worst)


def perturb(model, eps: float, copy: int):
    """``model`` with every parameter multiplied by 1 + eps·z, z ~ N(0, 1) drawn from a generator
    seeded with ``copy`` (the global RNG, which the run's batches and masks may draw from, is not
    touched)."""
    g = torch.Generator().manual_seed(copy)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + eps * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return model


def _perturbed_run(job):
    return run_one(job, wrap=partial(perturb, eps=job["eps"], copy=job["copy"]))


def spreads(todo, eps: float, copies: int, workers: int = 2) -> list[tuple]:
    """(job, unperturbed final loss, [each copy's final loss over it]) per job in ``todo`` (plain
    X's, and QLAB-X's default's where ``jobs`` was asked for them)."""
    many = [dict(j, eps=eps, copy=c) for j in todo for c in range(1, copies + 1)]
    with get_context("fork").Pool(workers) as pool:
        base = list(pool.imap(run_one, todo))
        out = list(pool.imap(_perturbed_run, many))
    return [(j, _loss(b), [_loss(r) / _loss(b) for r in out[i * copies:(i + 1) * copies]])
            for i, (j, b) in enumerate(zip(todo, base))]


def read(runs, src: Path = REMADE, seeds=None) -> int:
    """Print the headline's counts with the runs re-made under ``src`` (those at ``seeds``; None:
    every seed re-made) in the stored ones' place beside the stored counts, on the re-made tasks
    and on the whole selection, and the cells that flip (only a re-made task's can). The stored
    runs are the bar's (``bar_runs``): at seeds 0-2 the main suite's, at seeds 3-5 those the
    six-seed counts and the choice read."""
    from bench.quality.tasks import SELECTION
    remade = [r for r in load_remade(src) if seeds is None or r["seed"] in seeds]
    if not remade:
        print(f"no re-made runs under {src}" + ("" if seeds is None else f" at seeds {seeds}"))
        return 1
    seeds, tasks = sorted({r["seed"] for r in remade}), sorted({r["task"] for r in remade})
    bar = bar_runs(runs, seeds)
    kept = {_key(r): _loss(r) for r in bar}
    where = ", ".join(sorted({f"{r['machine']}, torch {r['torch']}" for r in remade}))
    same = sum(kept.get(_key(r)) == _loss(r) for r in remade)
    print(f"{len(remade)} runs re-made ({where}) on {len(tasks)} tasks, seeds {seeds}: {same} bit "
          f"for bit the stored ones")
    for kind, methods in (("plain X", BASES), ("QLAB-X's default", tuple(DEFAULTS))):
        d = sorted((_rel(kept[_key(r)], _loss(r)), _key(r)) for r in remade
                   if r["method"] in methods and _key(r) in kept)
        if d:
            print(f"{kind}: {len(d)} runs, relative difference median {d[len(d) // 2][0]:.1e}, "
                  f"{sum(x > 0.01 for x, _ in d)} above 1 %, {sum(x > 0.1 for x, _ in d)} above "
                  f"10 %, largest {d[-1][0]:.3g} {d[-1][1]}")
    mixed = one_machine(bar, remade)
    b0, b1 = best_plain(bar), best_plain(mixed)
    moved = sorted(k for k in b0 if k[0] in tasks and k[2] in seeds and b0[k][1] != b1[k][1])
    print(f"plain X's best grid lr moved on {len(moved)} of "
          f"{sum(k[0] in tasks and k[2] in seeds for k in b0)} (task, base, seed): {moved}")
    selection = standing(bar, SELECTION, seeds), standing(mixed, SELECTION, seeds)
    own = standing(bar, tasks, seeds), standing(mixed, tasks, seeds)
    for label, (a, b) in ((f"the {len(SELECTION)} selection tasks", selection),
                          (f"the {len(tasks)} re-made tasks", own)):
        for base in BASES:
            print(f"{label}, {base}: stored {a[base]['within']} of {a[base]['runs']} runs within, "
                  f"{a[base]['cells']} cells hold; re-made {b[base]['within']} of "
                  f"{b[base]['runs']}, {b[base]['cells']} cells")
    a, b = (s["worst"] for s in own)
    for cell in sorted(c for c in a if (a[c] <= BAR) != (b[c] <= BAR)):
        print(f"flips: {cell[0]} {cell[1]}: worst {a[cell]:.3f}x stored, {b[cell]:.3f}x re-made")
    a, b = (s["worst"] for s in selection)
    for base in BASES:
        ta = max((c for c in a if c[1] == base), key=a.get, default=None)
        tb = max((c for c in b if c[1] == base), key=b.get, default=None)
        if ta and tb:
            print(f"worst of the selection, {base}: stored {a[ta]:.3f}x ({ta[0]}), re-made "
                  f"{b[tb]:.3f}x ({tb[0]})")
    return 0


def main(argv=None) -> int:
    from bench.quality.tasks import SELECTION
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="selection", help="comma list or 'selection'")
    ap.add_argument("--seeds", default=None,
                    help="comma list (default 0; with --read, every seed re-made)")
    ap.add_argument("--default", action="store_true", help="re-make the defaults' runs too")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--perturb", type=float, default=None,
                    help="EPS: re-make each run (with --default the defaults' too) from "
                    "perturbed parameters instead")
    ap.add_argument("--alpha0", default=None,
                    help="comma list: with --default, only the defaults' runs at these α₀")
    ap.add_argument("--copies", type=int, default=4, help="perturbed copies per run")
    ap.add_argument("--grid", action="store_true",
                    help="re-make every run the bar reads (plain X at each grid lr, the defaults "
                    "at each α₀) and write them under results/remade/")
    ap.add_argument("--methods", default=",".join(BASES + tuple(DEFAULTS)),
                    help="with --grid: which of plain and QLAB sgd, momentum, adam to re-make")
    ap.add_argument("--read", action="store_true",
                    help="run nothing: the bar read from the runs under results/remade/ beside the "
                    "stored one")
    args = ap.parse_args(argv)
    tasks = list(SELECTION) if args.task == "selection" else args.task.split(",")
    seeds = [int(s) for s in (args.seeds or "0").split(",")]
    runs = load()
    if args.grid:
        remake_grid(runs, tasks, seeds, args.methods.split(","), args.workers)
        return 0
    if args.read:
        return read(runs, seeds=None if args.seeds is None else seeds)
    todo = jobs(runs, tasks, seeds, args.default)
    if args.alpha0 is not None:
        keep = {float(a) for a in args.alpha0.split(",")}
        todo = [j for j in todo if j["rule"] is None or j["lr"] in keep]
    if args.perturb is not None:
        res = spreads(todo, args.perturb, args.copies, args.workers)
        for j, loss, rel in res:
            print(f"{j['task']:22s} {j['method']:14s} seed {j['seed']} lr {j['lr']:<7g} final "
                  f"{loss:.6g}; {args.copies} copies at eps {args.perturb:g}: "
                  f"{min(rel):.4f}–{max(rel):.4f} of it")
        for kind, mine in (("plain X", [x for x in res if x[0]["rule"] is None]),
                           ("QLAB-X's default", [x for x in res if x[0]["rule"] is not None])):
            if not mine:
                continue
            wide = sorted((max(rel) / min(rel), j["task"], j["method"], j["seed"], j["lr"])
                          for j, _, rel in mine)
            print(f"{kind}: {len(mine)} runs, spread (largest copy over smallest) median "
                  f"{wide[len(wide) // 2][0]:.4g}x, widest {wide[-1][0]:.3f}x {wide[-1][1:]}")
        return 0
    with get_context("fork").Pool(args.workers) as pool:
        remade = list(pool.imap_unordered(run_one, todo))
    c = compare(runs, remade)
    order = lambda p: (p[0]["task"], p[0]["method"], p[0]["seed"], p[0]["lr"])  # noqa: E731
    for r, old, new in sorted(c["pairs"], key=order):
        mark = "same" if old == new else f"{new / old - 1:+.2e}"
        print(f"{r['task']:22s} {r['method']:14s} seed {r['seed']} lr {r['lr']:<7g} stored "
              f"{old:.6g} now {new:.6g} {mark}")
    print(f"{c['exact']} of {c['runs']} re-made runs bit for bit; largest relative difference "
          f"{c['worst']:.2e} ({c['where']}); bar cells that flip: {c['flips'] or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
