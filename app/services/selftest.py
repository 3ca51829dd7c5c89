"""The packaged program's self-test (Qt-free part): models load, a synthetic photo is detected and matched.

Run by ``flukeid self-test`` (``flukeid --self-test`` in the desktop build). It writes only to a
temporary folder and never touches the user's catalogs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SelfTestReport:
    """What the self-test checked: one line per step, and whether all passed."""

    steps: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(ok for _, ok, _ in self.steps)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.steps.append((name, ok, detail))
        return ok

    def lines(self) -> list[str]:
        return [f"[{'ok' if ok else 'FAILED'}] {name}{': ' + detail if detail else ''}"
                for name, ok, detail in self.steps]


def run_self_test(*, individuals: int = 4, seed: int = 11) -> SelfTestReport:
    """Open a temporary demo catalog with the shipped models, detect and match a synthetic photo.

    Returns:
        A :class:`SelfTestReport`; ``report.ok`` is True only if every step worked.
    """
    from app.catalog import Catalog
    from app.paths import demo_bundle_dir
    from app.services import demo, matching
    from model.api import FlukeidError, default_detector, make_identity, render_fluke_photo, verify_bundle

    report = SelfTestReport()
    try:
        manifest = verify_bundle(demo_bundle_dir())
        report.add("shipped demo model verified", True, f"{manifest.get('version')} ({demo_bundle_dir()})")
        detector = default_detector()
        import numpy as np

        rng = np.random.default_rng(seed)
        photo, true_box = render_fluke_photo(make_identity(seed), rng, (768, 512))
        det = detector.detect(photo)
        from model.api import box_iou

        iou = box_iou(det.box, true_box)
        report.add("fluke detected in a synthetic photo", iou > 0.3,
                   f"{det.source} detector, confidence {det.confidence:.2f}, IoU {iou:.2f}")
        with tempfile.TemporaryDirectory(prefix="flukeid-selftest-") as tmp:
            t0 = time.perf_counter()
            folder = demo.create_demo_catalog(Path(tmp) / "catalog", individuals=individuals, seed=seed,
                                              detector=detector, calibrate=False)
            with Catalog.open(folder, mode="read") as cat:
                report.add("temporary catalog built", cat.photo_count() > 0,
                           f"{cat.photo_count()} photos in {time.perf_counter() - t0:.1f} s")
                engine = matching.require_engine(cat)
                report.add("inference engine loaded", True, f"{engine.version} on {engine.provider}")
                identified = {i.photo_id for i in cat.current_identifications() if i.individual_id is not None}
                query = next((p.id for p in cat.photos() if p.id not in identified), None)
                if query is None:
                    report.add("an unidentified photo to match", False, "none in the temporary catalog")
                else:
                    result = matching.match_photo(cat, query, engine)
                    report.add("photo matched against the catalog", len(result.candidates) > 0,
                               f"top score {result.candidates[0].score:.3f}" if result.candidates else "no candidates")
    except FlukeidError as exc:
        report.add("self-test", False, str(exc))
    return report
