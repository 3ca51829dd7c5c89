"""The app's uncalibrated fused shortlist and model.fusion.fuse_shortlist agree (flukeid evaluate's
fused row uses the model function; this pins it to what the app shows)."""

from __future__ import annotations

import pytest

from app.services import importing, matching
from app.services import local_features as lf
from model.api import fuse_shortlist
from tests.app.conftest import FakeEngine
from tests.app.test_local_matching import flukes  # noqa: F401  (module fixture)


def test_app_shortlist_equals_model_fusion(catalog, flukes):  # noqa: F811
    images, gallery, queries, _ = flukes
    eng = FakeEngine()
    importing.import_labelled(catalog, gallery, images, engine=eng)
    rep = importing.import_labelled(catalog, queries, images, engine=eng)
    for qid in rep.imported:
        feats = lf.photo_features(catalog, qid, [])
        q = matching.photo_embedding(catalog, qid, eng)
        with matching.index_lock():
            app = matching.shortlist(catalog, feats, eng, lambda e=q: e, exclude={qid}, notes=[])
            index, _ = matching.local_index(catalog)
            local = index.search(feats, k=matching.SHORTLIST, exclude={qid})
        emb = matching.match_embedding(catalog, q, eng, k=matching.SHORTLIST, exclude={qid})
        gal = matching.gallery(catalog, eng.version, len(q))
        rows = fuse_shortlist(index, feats, local, [(c.individual, c.best_photo_id, c.score) for c in emb.candidates],
                              lambda ind, g=gal, q=q, x=qid: (matching._embedding_score(g, eng, q, ind, {x}), None))
        assert app.method == "fused" and len(app.rows) == len(rows) >= 2
        assert [r.individual for r in app.rows] == [r.individual for r in rows]
        assert [r.fused for r in app.rows] == pytest.approx([r.fused for r in rows])
        assert [r.votes + r.inliers for r in app.rows] == pytest.approx([r.local_evidence for r in rows])
