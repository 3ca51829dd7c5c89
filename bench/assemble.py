"""Assemble docs/BENCHMARKS.md from the fragments the bench scripts write to docs/bench/*.md.

Each bench script owns its fragment (command, machine, date, figures as measured); the prose that
reads a table is written by hand in docs/bench/notes/<name>.md, where a line ``<!-- tables -->``
marks the place of the fragment's body (the notes' text before it follows the fragment's heading).
This script only joins them in a fixed order, so a rerun of one benchmark updates one section.

    python -m bench.assemble
"""

from __future__ import annotations

from bench.common import ROOT

ORDER = ["table1", "rw_metric", "rw_recipe", "rw_rerank", "gpu", "train_throughput", "synth", "detector", "inference",
         "matching", "catalog", "package", "local", "learned_local", "imagenet_sweep", "imagenet", "retrain"]
MARKER = "<!-- tables -->"

HEADER = """# Benchmarks

Every table below is written by a script under `bench/` (its command is given with it), on the
machine named with it; the text around the right-whale tables is written by hand
(docs/bench/notes/). The development machine is a shared 2-core x86-64 CPU VM with no GPU;
timings on it are noisy, so figures are medians and comparisons are measured side by side in one
run. GPU figures come from one lent NVIDIA H200 session. Accuracy is split by how many photos an
individual has where the protocol allows it.

Regenerate this file from the fragments with `python -m bench.assemble`.
"""


def section(fragment: str, notes: str | None) -> str:
    """A fragment with its hand-written notes: heading, notes before the marker, body, notes after it."""
    fragment = fragment.strip()
    if not notes:
        return fragment + "\n"
    heading, _, body = fragment.partition("\n")
    before, marker, after = notes.partition(MARKER)
    if not marker:
        before, after = "", notes
    parts = [heading, before.strip(), body.strip(), after.strip()]
    return "\n\n".join(p for p in parts if p) + "\n"


def main() -> None:
    docs = ROOT / "docs" / "bench"
    frags = {p.stem: p for p in docs.glob("*.md")}
    parts = [HEADER]
    for name in ORDER + sorted(set(frags) - set(ORDER)):
        if name in frags:
            notes = docs / "notes" / f"{name}.md"
            parts.append(section(frags[name].read_text(), notes.read_text() if notes.is_file() else None))
    (ROOT / "docs" / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"wrote docs/BENCHMARKS.md from {len(frags)} fragments")


if __name__ == "__main__":
    main()
