"""Size of the desktop build and its start-up time to the first window -> docs/bench/package.md.

    make package && python -m bench.bench_package

Start-up is measured from launching the program until its first window has been shown and the
event loop has run once (`flukeid gui --exit-after-show`), offscreen, median of several runs,
side by side with the same from the source tree (`python -m app gui --exit-after-show`).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, configure_process

DIST = ROOT / "dist" / "flukeid"


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def _startup(cmd: list[str], runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": home, "XDG_CONFIG_HOME": home}
        for _ in range(runs):
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"{cmd}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return times


def main() -> int:
    configure_process()
    if not (DIST / "flukeid").is_file():
        raise SystemExit("dist/flukeid/flukeid not found: run `make package` first")
    runs = 7
    frozen = _startup([str(DIST / "flukeid"), "gui", "--exit-after-show"], runs)
    source = _startup([sys.executable, "-m", "app", "gui", "--exit-after-show"], runs)
    internal = DIST / "_internal"
    parts = sorted(((p.name, _size_mb(p) if p.is_dir() else p.stat().st_size / 2**20) for p in internal.iterdir()),
                   key=lambda x: -x[1])[:6]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        "## Desktop build (PyInstaller, one folder)",
        "",
        f"Command: `make package && python -m bench.bench_package` — machine: 2-core x86-64 CPU VM, no GPU "
        f"(load average {load:.1f} during the run) — {date}.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| size of dist/flukeid | {_size_mb(DIST):.0f} MB |",
        f"| start-up to first window, desktop build (median of {runs}, offscreen) | "
        f"{statistics.median(frozen):.2f} s (min {min(frozen):.2f}) |",
        f"| start-up to first window, from source `python -m app gui` (median of {runs}) | "
        f"{statistics.median(source):.2f} s (min {min(source):.2f}) |",
        f"| ratio build / source | {statistics.median(frozen) / statistics.median(source):.2f} |",
        "",
        "Largest parts: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in parts)
        + ". onnxruntime-gpu's CUDA and TensorRT provider libraries make up most of onnxruntime's share; "
          "torch is not in the build (Retrain uses a separate training Python, see docs/INSTALL.md).",
    ]
    out = ROOT / "docs" / "bench" / "package.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
