"""Ratios of the quality bar: QLAB-X(α₀) final train loss / X at its best grid lr, per seed.

    python -m bench.quality.analyze                      # every results file
    python -m bench.quality.analyze --tag ablation --rule stale
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

from bench.quality.run import BASES, GRID, RESULTS


def load(tags=None):
    runs = []
    for path in sorted(RESULTS.glob("*.json")):
        tag = path.stem.split("__", 1)[1]
        if tags and tag not in tags:
            continue
        data = json.loads(path.read_text())
        for r in data["runs"]:
            r["tag"] = tag
            runs.append(r)
    return runs


def _loss(r):
    v = r["final_train_loss"]
    return math.inf if v is None or not math.isfinite(v) else v


def best_plain(runs, grid=GRID):
    """{(task, base, seed): (best loss, best lr)} over the plain runs at an lr of ``grid`` (the
    bar's "X at its best grid lr"); ``grid=None`` takes every lr, the grid's and those past its
    edge (bench/quality/past_edge.py)."""
    best = {}
    for r in runs:
        if r["method"] in BASES and (grid is None or r["lr"] in grid):
            key = (r["task"], r["method"], r["seed"])
            if key not in best or _loss(r) < best[key][0]:
                best[key] = (_loss(r), r["lr"])
    return best


def rule_of(r, defaults) -> str | None:
    """The rule a stored run was made with: its own name, or for a QLAB run of the main suite
    (stored without one) its method's default in ``defaults`` ({method: rule})."""
    if r.get("rule") is None and r.get("tag") == "main":
        return defaults.get(r["method"])
    return r.get("rule")


def made_with(runs, defaults) -> dict:
    """{(method, rule, task, lr, seed): run}, one QLAB run per rule and cell as the choice and the
    bar read them: a run naming its rule before the main suite's unnamed one (``rule_of``), and of
    several naming it (under different tags) the first loaded."""
    out = {}
    named = [r for r in runs if r.get("rule") is not None]
    for r in named + [r for r in runs if r.get("rule") is None]:
        rule = rule_of(r, defaults)
        if rule is not None and r["method"].startswith("qlab_"):
            out.setdefault((r["method"], rule, r["task"], r["lr"], r["seed"]), r)
    return out


def ratios(runs, rule, grid=GRID):
    """{(task, base, α₀): [ratio per seed]} for QLAB runs with that rule (None: default rule), to X
    at its best lr of ``grid`` (None: every lr run)."""
    best = best_plain(runs, grid)
    out = defaultdict(list)
    for r in runs:
        if r["method"].startswith("qlab_") and r.get("rule") == rule:
            base = r["method"][5:]
            b = best.get((r["task"], base, r["seed"]))
            if b:
                out[(r["task"], base, r["lr"])].append(_loss(r) / b[0])
    return out


def table(runs, rule, bar=1.10):
    rat = ratios(runs, rule)
    tasks = sorted({k[0] for k in rat})
    lines, held, total = [], 0, 0
    for task in tasks:
        for base in BASES:
            row = [(a0, rat[(task, base, a0)]) for a0 in sorted({k[2] for k in rat if k[:2] == (task, base)})]
            if not row:
                continue
            cells = []
            for a0, rs in row:
                worst = max(rs)
                total += len(rs)
                held += sum(x <= bar for x in rs)
                cells.append(f"{worst:6.2f}" + ("" if worst <= bar else "*"))
            lines.append(f"{task:17s} {base:9s} " + " ".join(f"{c:8s}" for c in cells))
    return lines, held, total


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rule", default=None)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    runs = load()
    rules = [args.rule] if args.rule else sorted({r.get("rule") for r in runs if r["method"].startswith("qlab_")}, key=str)
    for rule in rules:
        sel = [r for r in runs if not r["method"].startswith("qlab_") or r.get("rule") == rule]
        if args.tag:
            sel = [r for r in sel if not r["method"].startswith("qlab_") or r["tag"] == args.tag]
        lines, held, total = table(sel, rule)
        print(f"== rule {rule}: worst ratio over seeds per α₀ (* > 1.10); {held}/{total} runs within bar")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
