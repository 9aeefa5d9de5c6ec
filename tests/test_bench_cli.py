"""`python -m qlab_fused bench --quick` end to end: it writes a report with the expected sections
and tables, JSON and plots, and every number the report shows is finite and positive; and the GPU
probe-configuration sweep, dry-run on the CPU."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
SECTIONS = ["# qlab_fused benchmark report", "## Copy bandwidth",
            "## Headline: QLAB probe + update vs torch's fused step",
            "## Optimizer-step microbenchmarks", "## Whole training step", "## Plots", "## Notes"]


def _tables(text):
    """{first header cell + column count: [rows as cell lists]} for each markdown table."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = {"header": cells, "rows": []}
                tables.append(cur)
            elif not all(set(c) <= {"-"} for c in cells):
                cur["rows"].append(cells)
        else:
            cur = None
    return tables


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


def test_bench_quick(tmp_path):
    out = tmp_path / "report"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # One thread: the quick run times tiny tensors, where OpenMP barriers on a loaded 2-core
    # machine cost more than the work.
    proc = subprocess.run([sys.executable, "-m", "qlab_fused", "bench", "--quick", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "headline" in proc.stdout and "whole training step" in proc.stdout
    assert "bench" in proc.stderr  # the tqdm progress bar

    files = set(os.listdir(out))
    assert {"report.md", "results.json", "gbps.png", "step_breakdown.png"} <= files
    for png in ("gbps.png", "step_breakdown.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = (out / "report.md").read_text()
    pos = [text.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in pos) and pos == sorted(pos), pos
    assert "![gbps.png](gbps.png)" in text and "![step_breakdown.png](step_breakdown.png)" in text
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE)
    assert not re.search(r"(?<![\w.\-/])-\d", text), "a negative number in the report"

    tables = _tables(text)
    heads = [t["header"][0] for t in tables]
    assert heads == ["when", "backend", "kind", "model"], heads
    copy_t, head_t, micro_t, step_t = tables
    assert len(copy_t["rows"]) == 2
    # every QLAB backend that can run here appears in the headline, with each kind
    timed = {(r[0], r[2]) for r in head_t["rows"]}
    assert timed >= {("torch", k) for k in ("sgd", "momentum", "adam")}
    assert {r[4] for r in micro_t["rows"]} >= {"torch:foreach", "torch:fused"}
    assert {r[1] for r in micro_t["rows"]} == {"fp32", "bf16"}
    assert {r[0] for r in step_t["rows"]} == {"mlp", "cnn", "gpt"}
    assert len(step_t["rows"]) == 3 * 2 * 3  # models × {SGD, Adam} × {torch, QLAB inplace, copy}
    for t in tables:
        for row in t["rows"]:
            assert len(row) == len(t["header"])
            for cell in row:
                for m in NUM.findall(cell.replace("1+F/(F+B)", "")):
                    v = float(m)
                    assert math.isfinite(v) and v > 0, (t["header"][0], row, cell)
    # headline ratios: measured ratio to fused, and the byte-model floor (11/7, 2.0 inplace)
    hi = {h: i for i, h in enumerate(head_t["header"])}
    floors = {(r[hi["probe"]], r[hi["kind"]]): float(r[hi["byte floor ×"]]) for r in head_t["rows"]}
    assert floors[("inplace", "adam")] == 1.57 and floors[("inplace", "sgd")] == 2.0
    assert all(float(r[hi["× torch fused"]]) > 0 for r in head_t["rows"])

    rec = json.loads((out / "results.json").read_text())
    assert rec["copy_gbps"] > 0 and rec["micro"] and rec["steps"]
    assert all(math.isfinite(x) for x in _numbers(rec))
    for r in rec["steps"]:
        if r["mode"] != "torch":
            assert r["step_ratio"] > 0 and 1 < r["floor"] < 2


def test_triton_probe_config_sweep_dry_run(tmp_path):
    """bench/triton_probe_configs.py (run on a GPU to choose kernels/probe.config) works end to end:
    on CPU tensors under the Triton interpreter, every configuration of every case is timed and the
    JSON names the configuration the library would launch."""
    pytest.importorskip("triton")
    out = tmp_path / "configs.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=root)
    script = os.path.join(root, "bench", "triton_probe_configs.py")
    proc = subprocess.run([sys.executable, script, str(out), "--numel", "3000", "--reps", "1",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert len(rec["rows"]) == 3 * 6 and all("error" not in r for r in rec["rows"])
    assert all(r["median_s"] > 0 and math.isfinite(r["gbps"]) for r in rec["rows"])
    assert set(rec["default"]) == {"adam 3000", "momentum 3000", "sgd 3000"}
