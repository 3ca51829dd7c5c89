"""Assemble docs/BENCHMARKS.md from the fragments that each bench script writes to docs/bench/*.md.

Each bench script owns its fragment (command, machine, date, figures as measured); this script
only concatenates them in a fixed order, so a rerun of one benchmark updates one section.

    python -m bench.assemble
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["table1", "rw_recipe", "rw_rerank", "gpu", "train_throughput", "synth", "detector", "inference", "matching", "catalog", "package"]

HEADER = """# Benchmarks

Every table below is written by a script under `bench/` (its command is given with it), on the
machine named with it. The development machine is a shared 2-core x86-64 CPU VM with no GPU;
timings on it are noisy, so figures are medians and comparisons are measured side by side in one
run. GPU figures come from one lent NVIDIA H200 session. Accuracy is split by how many photos an
individual has where the protocol allows it.

Regenerate this file from the fragments with `python -m bench.assemble`.
"""


def main() -> None:
    parts = [HEADER]
    frags = {p.stem: p for p in (ROOT / "docs" / "bench").glob("*.md")}
    for name in ORDER + sorted(set(frags) - set(ORDER)):
        if name in frags:
            parts.append(frags[name].read_text().strip() + "\n")
    (ROOT / "docs" / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"wrote docs/BENCHMARKS.md from {len(frags)} fragments")


if __name__ == "__main__":
    main()
