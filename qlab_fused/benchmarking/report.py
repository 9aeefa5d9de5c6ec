"""Tables (plain text for the terminal, markdown for the report), the JSON record, and PNG plots of
a benchmark run. Every number a table shows is finite and positive; a quantity that does not apply
(or could not be measured) is shown as "–" and explained in the notes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import torch

NA = "–"


# -- machine ----------------------------------------------------------------------------------------
def machine(device) -> dict:
    """CPU model, cores, GPU, versions: what a reader needs to compare numbers."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - optional
        info["triton"] = "not installed"
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# -- formatting ---------------------------------------------------------------------------------------
def _num(x, fmt="{:.3g}"):
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        return NA
    return fmt.format(x)


def _ms(s):
    return _num(None if s is None else s * 1e3, "{:.3g}")


def _size(n):
    e = int(math.floor(math.log10(n)))
    m = n / 10 ** e
    return f"{m:.2g}e{e}"


def _table(header, rows, md: bool) -> str:
    rows = [[str(c) for c in r] for r in rows]
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * x for x in w])] + [fmt(r) for r in rows])


MICRO_HEADER = ["kind", "dtype", "N", "tensors", "impl", "probe", "ms", "probe ms", "update ms",
                "GB/s", "% copy", "× fused", "× foreach", "floor ×"]


def micro_table(results, md=False) -> str:
    rows = []
    for r in results:
        p = r.get("parts_s") or {}
        rows.append([r["kind"], r["dtype"], _size(r["numel"]), r["ntensors"], r["impl"],
                     r.get("probe", NA) if r.get("probe") != "-" else NA, _ms(r.get("median_s")),
                     _ms(p.get("probe")), _ms(p.get("update")), _num(r.get("gbps")),
                     _num(r.get("pct_copy"), "{:.3g}"), _num(r.get("ratio_fused"), "{:.3g}"),
                     _num(r.get("ratio_foreach"), "{:.3g}"), _num(r.get("floor_ratio"), "{:.3g}")])
    return _table(MICRO_HEADER, rows, md)


HEADLINE_HEADER = ["backend", "probe", "kind", "N", "ms", "GB/s", "% copy", "× torch fused",
                   "byte floor ×", "× torch foreach", "best ms", "best % copy", "best × fused"]


def headline(results) -> list:
    """Per QLAB backend, fp32, single tensor, at the largest size: the ratio to torch's fused step
    beside the byte-model floor (1.57× Adam, 2.0× SGD inplace)."""
    one = [r for r in results if r["dtype"] == "fp32" and r["ntensors"] == 1 and r.get("median_s")]
    if not one:
        return []
    n = max(r["numel"] for r in one)
    out = [r for r in one if r["numel"] == n and r["impl"].startswith("qlab:")]
    return sorted(out, key=lambda r: (r["impl"], r["probe"], r["kind"]))


def headline_table(results, md=False) -> str:
    rows = [[r["impl"].split(":")[1], r["probe"], r["kind"], _size(r["numel"]), _ms(r["median_s"]),
             _num(r["gbps"]), _num(r.get("pct_copy"), "{:.3g}"), _num(r.get("ratio_fused"), "{:.3g}"),
             _num(r.get("floor_ratio"), "{:.3g}"), _num(r.get("ratio_foreach"), "{:.3g}"),
             _ms(r.get("min_s")), _num(r.get("pct_copy_min"), "{:.3g}"),
             _num(r.get("ratio_fused_min"), "{:.3g}")]
            for r in headline(results)]
    return _table(HEADLINE_HEADER, rows, md)


BASE_NAMES = {"sgd": "SGD", "adam": "Adam"}
STEP_HEADER = ["model", "params", "optimizer", "impl", "zero_grad ms", "forward ms", "backward ms",
               "probe fwd ms", "opt passes ms", "opt other ms", "step ms", "× torch step",
               "floor 1+F/(F+B)", "tensor MB", "peak MB"]


def step_table(results, md=False) -> str:
    rows = []
    for r in results:
        t = r["times_s"]
        name = (("QLAB-" if r["mode"] != "torch" else "") + BASE_NAMES[r["base"]]
                + (f" ({r['mode'].split('-')[1]})" if r["mode"] != "torch" else ""))
        rows.append([r["model"], _num(r["params"] / 1e6, "{:.3g}M"), name, r["impl"],
                     _ms(t["zero_grad"]), _ms(t["forward"]), _ms(t["backward"]),
                     _ms(t["probe_forward"]), _ms(t["passes"]), _ms(t["optimizer_other"]),
                     _ms(t["total"]), _num(r.get("step_ratio"), "{:.3g}"),
                     _num(r.get("floor"), "{:.3g}") if r["mode"] != "torch" else NA,
                     _num(r["tensor_bytes"] / 1e6, "{:.3g}"),
                     _num(r.get("peak_bytes", 0) / 1e6, "{:.3g}")])
    return _table(STEP_HEADER, rows, md)


def copy_table(copy, md=False) -> str:
    rows = [[k, _num(c["numel"] / 1e6, "{:.0f}M"), _ms(c["median_s"]), _num(c["gbps"]),
             _num(c.get("gbps_best"))] for k, c in copy.items()]
    return _table(["when", "fp32 elements", "ms", "GB/s", "best GB/s"], rows, md)


# -- outputs ------------------------------------------------------------------------------------------
def write_json(path, record) -> None:
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)


def plots(record, out_dir) -> list:
    """gbps.png (GB/s vs size per backend and kind) and step_breakdown.png; returns file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    micro = [r for r in record.get("micro", []) if r.get("median_s") and r["ntensors"] == 1]
    if micro:
        kinds = sorted({r["kind"] for r in micro}, key=["sgd", "momentum", "adam"].index)
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            series = {}
            for r in micro:
                if r["kind"] == kind:
                    probe = "" if r["probe"] == "-" else f" {r['probe']}"
                    series.setdefault(f"{r['impl']}{probe} {r['dtype']}", []).append(r)
            for label, rs in sorted(series.items()):
                rs = sorted(rs, key=lambda r: r["numel"])
                ax.plot([r["numel"] for r in rs], [r["gbps"] for r in rs], marker="o",
                        ls="--" if "bf16" in label else "-", label=label)
            bw = record["copy_gbps"]
            ax.axhline(bw, color="k", lw=1, ls=":", label=f"copy {bw:.1f} GB/s")
            ax.set_xscale("log")
            ax.set_xlabel("elements")
            ax.set_ylabel("GB/s (SPEC §4 byte model)")
            ax.set_title(kind)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "gbps.png"), dpi=110)
        plt.close(fig)
        files.append("gbps.png")
    steps = record.get("steps", [])
    if steps:
        parts = ["zero_grad", "forward", "backward", "probe_forward", "passes", "optimizer_other"]
        labels = [f"{r['model']} {'QLAB-' if r['mode'] != 'torch' else ''}{BASE_NAMES[r['base']]}"
                  f"{' ' + r['mode'].split('-')[1] if r['mode'] != 'torch' else ''}" for r in steps]
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(steps) + 1.5))
        left = [0.0] * len(steps)
        for part in parts:
            w = [max(r["times_s"][part], 0.0) * 1e3 for r in steps]
            ax.barh(range(len(steps)), w, left=left, label=part)
            left = [a + b for a, b in zip(left, w)]
        ax.set_yticks(range(len(steps)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms per training step (median)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "step_breakdown.png"), dpi=110)
        plt.close(fig)
        files.append("step_breakdown.png")
    return files


def markdown(record, images) -> str:
    m = record["machine"]
    dev = record["device"]
    lines = [
        "# qlab_fused benchmark report", "",
        f"Run {record['date']} on {dev}: {m.get('gpu', m['cpu'])}; CPU {m['cpu']}, {m['cores']} cores, "
        f"torch threads {m['threads']}. python {m['python']}, torch {m['torch']}, "
        f"triton {m['triton']}. Command: `{record['command']}`.", "",
        "Times are medians; ratios compare measurements of the same run (interleaved rounds on CPU). "
        "GB/s use the SPEC §4 byte model (module docstring of `qlab_fused.benchmarking.micro`); "
        "'% copy' is that over the copy bandwidth measured in this run.", "",
        "## Copy bandwidth", "", copy_table(record["copy"], md=True), "",
        f"Reference: {record['copy_gbps']:.1f} GB/s (the larger median; read + write counted); "
        f"best round {record.get('copy_gbps_best', record['copy_gbps']):.1f} GB/s (for the 'best' "
        "columns).", "",
    ]
    if record.get("micro"):
        lines += [
            "## Headline: QLAB probe + update vs torch's fused step (fp32, largest size)", "",
            headline_table(record["micro"], md=True), "",
            "'byte floor ×' is the ideal time ratio from bytes moved: 11/7 = 1.57 for Adam and "
            "6/3 = 2.0 for SGD with inplace probing (copy: 12/7, 7/3).", "",
            "## Optimizer-step microbenchmarks", "", micro_table(record["micro"], md=True), "",
        ]
    if record.get("steps"):
        lines += ["## Whole training step", "", step_table(record["steps"], md=True), "",
                  "'× torch step' is the QLAB step over the torch step of the same model and base "
                  "optimizer; its floor 1 + F/(F+B) assumes a free optimizer and a probe forward as "
                  "costly as the training forward (F, B from the torch run).", ""]
    lines += ["## Plots", ""] + [f"![{i}]({i})" for i in images] + [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in record.get("notes", [])] + [""]
    return "\n".join(lines)


def write_all(record, out_dir) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    images = plots(record, out_dir)
    write_json(os.path.join(out_dir, "results.json"), record)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown(record, images))
    return {"report": "report.md", "json": "results.json", "images": images}


def print_tables(record, file=sys.stdout) -> None:
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"\ncopy bandwidth ({record['device']}):")
    p(copy_table(record["copy"]))
    if record.get("micro"):
        p("\nheadline (fp32, largest size): QLAB probe+update vs torch fused step")
        p(headline_table(record["micro"]))
        p("\noptimizer-step microbenchmarks:")
        p(micro_table(record["micro"]))
    if record.get("steps"):
        p("\nwhole training step:")
        p(step_table(record["steps"]))
