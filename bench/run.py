"""`make bench`: run every benchmark, print one table, write JSON (bench/results/) and the load plot (docs/).

Benchmarks print figures; they never pass or fail. Each module exposes `run(quick: bool) -> list[dict]` with rows
{"figure", "ours", "unit", and optionally "pipecat", "audioop", "baseline", "target", "note"}; a value is a number
or a string (e.g. "8 / 21", "< -95 dB (floor)"). The table always has the columns
figure | ours | pipecat | audioop | baseline | unit | target | note.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SUITES = [
    "bench.audio_bench",
    "bench.bridge_bench",
    "bench.load_bench",
    "bench.control_bench",
    "bench.webhook_bench",
    "bench.console_bench",
]
COLUMNS = ["ours", "pipecat", "audioop", "baseline"]


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table: every system's column always present, in a fixed order; a dash where it has no figure."""
    header = ["figure", *COLUMNS, "unit", "target", "note"]
    lines = [[r.get("figure", ""), *[fmt(r.get(c)) for c in COLUMNS], r.get("unit", ""), r.get("target", ""),
              r.get("note", "")] for r in rows]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """docs/load_vs_calls.png: p99 latency and CPU per call against simultaneous calls, ours and the baseline."""
    points = [r for r in rows if r.get("plot") == "load_vs_calls"]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, cpu) = plt.subplots(1, 2, figsize=(11, 4))
    for series in sorted({p["series"] for p in points}):
        mine = sorted((p for p in points if p["series"] == series), key=lambda p: p["calls"])
        calls = [p["calls"] for p in mine]
        latency.plot(calls, [p["p99_ms"] for p in mine], marker="o", label=series)
        cpu.plot(calls, [p["cpu_per_call_pct"] for p in mine], marker="o", label=series)
    latency.axhline(50, color="grey", linestyle="--", linewidth=1, label="50 ms target")
    latency.set(xlabel="simultaneous calls (node pinned to one core)", ylabel="p99 latency, worse direction (ms)",
                title="Latency vs calls", yscale="log")  # fmt: skip
    cpu.set(xlabel="simultaneous calls (node pinned to one core)", ylabel="% of one core per call",
            title="CPU per call vs calls", ylim=(0, None))  # fmt: skip
    for ax in (latency, cpu):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (under a minute)")
    parser.add_argument("--only", choices=SUITES, action="append", help="run only these suites")
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']} · {info['cores']} cores · Python {info['python']} · {info['date']}")
    rows: list[dict[str, Any]] = []
    for name in args.only or SUITES:
        started = time.monotonic()
        try:
            rows += importlib.import_module(name).run(quick=args.quick)
        except Exception:  # a broken suite must not hide the others' figures
            traceback.print_exc()
            rows.append({"figure": f"{name} failed (see traceback above)", "ours": None, "unit": ""})
        print(f"  {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    shown = [r for r in rows if "plot" not in r]
    print(table(shown))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {"machine": info, "quick": args.quick, "rows": rows}
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    if not args.quick:
        plot(rows, ROOT / "docs" / "load_vs_calls.png")
    print(f"\nJSON: bench/results/bench-{stamp}.json")


if __name__ == "__main__":
    main()
