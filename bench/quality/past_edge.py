"""The bar against plain X tuned past the grid's edge.

    python -m bench.quality.run --task all --suite past_edge                           # seeds 0-2
    python -m bench.quality.run --task all --suite past_edge --seeds 3,4,5 --tag seeds345_past_edge
    python -m bench.quality.past_edge

Issue 3's bar compares QLAB-X with X at its best lr of the grid {1e-4, ..., 1}. Where that best
lr is the grid's edge, X might do better past it, and the bar would flatter QLAB. The `past_edge`
suite runs X a decade further, and again, until its best lr is inside the lrs run (or at
PAST_EDGE_LIMITS); this module counts the defaults' runs within the bar against that X too (never
instead: the bar stays the issue's), and lists the (task, base) cells where X gains past the grid.
"""
from __future__ import annotations

import argparse
import math

from bench.quality.analyze import best_plain, load
from bench.quality.choose import BAR, CHOICE_SEEDS, gather
from bench.quality.interpolation import KINDS
from bench.quality.run import BASES, GRID, PAST_EDGE_LIMITS
from bench.quality.tasks import SELECTION
from qlab_fused.reference import resolve_rule


def _default(runs, base, tasks, seeds):
    """The base's default rule gathered against X at its best grid lr and against X past the
    edge."""
    rule = resolve_rule("auto", KINDS[base])
    return tuple(gather(runs, base, [rule], tasks=tasks, seeds=seeds, grid=g)[0]
                 for g in (GRID, None))


def summary(runs, tasks=SELECTION, seeds=CHOICE_SEEDS) -> list[str]:
    """Per base: the defaults' runs within the bar and tasks holding, against X at its best grid lr
    and against X tuned past the edge."""
    out = []
    for base in BASES:
        grid, past = _default(runs, base, tasks, seeds)
        if not grid.ratios:
            continue
        out.append(f"{base}: {grid.within} of {len(grid.ratios)} runs within {BAR:g}x, "
                   f"{grid.cells} tasks hold (best grid lr); past the edge {past.within} of "
                   f"{len(past.ratios)}, {past.cells} tasks hold; worst {grid.worst[0]:.2f}x -> "
                   f"{past.worst[0]:.2f}x ({past.worst[1]})")
    return out


def rows(runs, tasks=SELECTION, seeds=CHOICE_SEEDS) -> list[tuple]:
    """(task, base, seeds where X gains past the grid, of seeds run past it, X's best lrs there,
    its largest gain, the default's worst ratio against the grid's best and against X past the
    edge, whether one of those best lrs is at PAST_EDGE_LIMITS, where the search stopped)."""
    grid, past = best_plain(runs), best_plain(runs, grid=None)
    ran = {(r["task"], r["method"], r["seed"]) for r in runs
           if r["method"] in BASES and r["tag"].endswith("past_edge")}
    out = []
    for base in BASES:
        cg, cp = _default(runs, base, tasks, seeds)
        for task in tasks:
            keys = [(task, base, s) for s in seeds if (task, base, s) in ran]
            gains = {k[2]: grid[k][0] / past[k][0] for k in keys if past[k][1] != grid[k][1]}
            if not gains:
                continue
            lrs = sorted({past[(task, base, s)][1] for s in gains})
            worst = [max((v for k, v in c.ratios.items() if k[0] == task), default=math.nan)
                     for c in (cg, cp)]
            out.append((task, base, len(gains), len(keys), lrs, max(gains.values()), *worst,
                        any(lr in PAST_EDGE_LIMITS for lr in lrs)))
    return out


def table(runs, tasks=SELECTION, seeds=CHOICE_SEEDS) -> list[str]:
    lines = ["| task | base | seeds better past the grid | X's best lr there | X's loss gain | "
             "QLAB-X worst ratio: to the grid's best → past the edge |",
             "|---|---|---|---|---|---|"]
    for task, base, n, of, lrs, gain, wg, wp, limit in rows(runs, tasks, seeds):
        mark = " (still at the edge)" if limit else ""
        lines.append(f"| {task} | {base} | {n}/{of} | {', '.join(f'{x:g}' for x in lrs)}{mark} | "
                     f"{gain:.2f}× | {wg:.2f} → {wp:.2f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", default=",".join(map(str, CHOICE_SEEDS)))
    args = ap.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    runs = load()
    print("\n".join(summary(runs, seeds=seeds) + [""] + table(runs, seeds=seeds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
