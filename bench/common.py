"""What the bench scripts share: the machine line of a fragment, and writing the fragment.

Each bench script writes its section of docs/BENCHMARKS.md to docs/bench/<name>.md (bench.assemble
joins them).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the cpu preset has gained since its first metric-learning recipe (frozen early stages, random
# erasing, wider rotation/zoom, a larger ArcFace margin), switched off: the runs measured or built with that recipe (bench_table1's
# rw_full row, bench_rw_recipe's variants, the shipped demo bundle) pin it so a rerun reproduces them.
FIRST_METRIC_RECIPE = {"branch.frozen_stages": 0, "augment.erase_p": 0.0, "augment.rotation": 10.0,
                       "augment.zoom": 0.1, "metric.margin": 0.3}


def machine() -> str:
    """``2-core CPU (x86_64), no GPU``: the machine a figure was measured on."""
    return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU"


def write_fragment(name: str, md: str) -> Path:
    """Write ``md`` to docs/bench/<name>.md and say so; returns the path."""
    out = ROOT / "docs" / "bench" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(f"wrote {out}")
    return out
