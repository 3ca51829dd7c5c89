"""Photo import: metadata, thumbnails, duplicates, corrupt files, cancel, detector/engine, labels, relink."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from app.services.importing import embed_missing, import_labelled, import_photos, relink
from model.api import DataError, Interrupted
from tests.app.conftest import FakeDetector, FakeEngine, write_photo


def test_import_folder_recursive_with_progress_and_thumbnails(catalog, photos):
    seen = []
    rep = import_photos(catalog, [photos[0].parent], progress=lambda f, m: seen.append((f, m)))
    assert len(rep.imported) == 5 and not rep.errors and not rep.duplicates
    assert seen[-1][0] == 1.0 and all(0 <= f <= 1 for f, _ in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    for pid in rep.imported:
        ph = catalog.photo(pid)
        assert catalog.thumbnail_path(ph.sha256).is_file()
        assert (ph.width, ph.height) == (96, 64)
        assert catalog.current_box(pid) is None  # no detector given


def test_exif_date_gps_camera_and_orientation(catalog, tmp_path):
    exif = {271: "Canon", 272: "Canon EOS 7D", 274: 6,
            0x8769: {36867: "2019:08:14 09:30:05"},
            0x8825: {1: "S", 2: (20.0, 30.0, 0.0), 3: "W", 4: (70.0, 15.0, 36.0)}}
    p = write_photo(tmp_path / "exif.jpg", 1, size=(96, 64), exif=exif)
    pid = import_photos(catalog, [p]).imported[0]
    ph = catalog.photo(pid)
    assert ph.taken_at == "2019-08-14T09:30:05"
    assert ph.latitude == pytest.approx(-20.5) and ph.longitude == pytest.approx(-70.26)
    assert ph.camera == "Canon EOS 7D" and ph.orientation == 6
    assert (ph.width, ph.height) == (64, 96)  # rotated by the EXIF orientation


def test_duplicates_and_corrupt_files_reported_rest_imported(catalog, photos, tmp_path):
    d = photos[0].parent
    shutil.copy(photos[0], d / "copy_of_0.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a photo")
    data = photos[1].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "notes.txt").write_text("ignored")
    rep = import_photos(catalog, [d, tmp_path / "missing.jpg"])
    assert len(rep.imported) == 5
    assert [os.path.basename(p) for p, _ in rep.duplicates] == ["img_0.jpg"] or \
        [os.path.basename(p) for p, _ in rep.duplicates] == ["copy_of_0.jpg"]
    errs = {os.path.basename(p): msg for p, msg in rep.errors}
    assert set(errs) == {"empty.jpg", "text.jpg", "truncated.jpg", "missing.jpg"}
    assert "empty" in errs["empty.jpg"] and "not a recognised image" in errs["text.jpg"]
    assert rep.skipped == 1
    assert catalog.photo_count() == 5
    # importing again: everything is a duplicate, nothing added
    again = import_photos(catalog, [d])
    assert not again.imported and len(again.duplicates) == 6
    assert "5 duplicates" not in rep.summary() and "1 duplicate skipped" in rep.summary()


def test_cancel_leaves_consistent_catalog(catalog, photos):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Interrupted) as exc:
        import_photos(catalog, [photos[0].parent], detector=FakeDetector(), should_stop=stop)
    rep = exc.value.report
    assert rep.cancelled and len(rep.imported) == 2
    assert catalog.photo_count() == 2
    assert all(catalog.current_box(p.id) is not None for p in catalog.photos())
    assert catalog.integrity_check() == "ok"
    # a later import picks up the rest
    assert len(import_photos(catalog, [photos[0].parent]).imported) == 3


def test_detector_and_engine_fill_box_and_embedding(catalog, tmp_path):
    p = write_photo(tmp_path / "big.jpg", 3, size=(2400, 1600))
    pid = import_photos(catalog, [p], detector=FakeDetector(), engine=FakeEngine()).imported[0]
    box = catalog.current_box(pid)
    assert box.source == "auto" and box.confidence == pytest.approx(0.9)
    assert box.box == pytest.approx((600, 400, 1800, 1200), rel=1e-3)  # photo pixels, not model pixels
    emb = catalog.embedding(pid, "fake-1")
    assert emb.shape == (8,) and emb[0] == pytest.approx(30 / 255, abs=0.02)


def test_embed_missing_fills_later(catalog, photos):
    import_photos(catalog, photos)
    rep = embed_missing(catalog, FakeEngine())
    assert len(rep["embedded"]) == 5 and catalog.photos_missing_embedding("fake-1") == []


def test_copy_into_catalog(catalog, photos):
    pid = import_photos(catalog, photos[:1], copy=True).imported[0]
    ph = catalog.photo(pid)
    assert ph.copied and not os.path.isabs(ph.path)
    assert catalog.resolve_path(ph).read_bytes() == photos[0].read_bytes()


def test_symlink_loop_is_safe(catalog, photos):
    d = photos[0].parent
    os.symlink(d, d / "sub" / "loop")
    rep = import_photos(catalog, [d])
    assert len(rep.imported) == 5 and not rep.duplicates


def test_labels_csv_and_kaggle_csv(catalog, tmp_path):
    imgs = tmp_path / "data" / "images"
    for i in range(4):
        write_photo(imgs / f"p{i}.jpg", 10 + i)
    (tmp_path / "data" / "labels.csv").write_text(
        # p0's box agrees with the detector's (a disagreement would leave it for the box review)
        "image,individual_id,x0,y0,x1,y1\np0.jpg,W1,23,15,73,49\np1.jpg,W1,,,,\np2.jpg,W2,,,,\np3.jpg,new_whale,,,,\n")
    rep = import_labelled(catalog, tmp_path / "data" / "labels.csv", detector=FakeDetector())
    assert len(rep.imported) == 4 and rep.identified == 3
    w1 = catalog.individual_by_code("W1")
    assert len(catalog.photos_of(w1.id)) == 2
    p0 = catalog.photos_of(w1.id)[0]
    assert catalog.current_box(p0).source == "imported" and catalog.current_box(p0).confirmed
    assert catalog.current_identification(p0).how == "imported"
    assert len(catalog.unidentified_photo_ids()) == 1

    k = tmp_path / "kaggle"
    write_photo(k / "train" / "a.jpg", 30)
    write_photo(k / "train" / "b.jpg", 31)
    (k / "train.csv").write_text("Image,Id\na.jpg,w_123\nb.jpg,new_whale\n")
    rep = import_labelled(catalog, k / "train.csv")
    assert len(rep.imported) == 2 and rep.identified == 1
    assert catalog.individual_by_code("w_123") is not None


def test_bad_labels_csv_names_file(catalog, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,whale\na.jpg,x\n")
    with pytest.raises(DataError, match="bad.csv: missing columns"):
        import_labelled(catalog, bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        import_labelled(catalog, empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,individual_id\nbaleine_é.jpg,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        import_labelled(catalog, latin)


@pytest.mark.parametrize("exif,want", [
    ({0x8769: {36867: "2019-08-14 09:30:05"}}, "2019-08-14T09:30:05"),  # dashes (some editors write them)
    ({0x8769: {36867: "    :  :     :  :  ", 36868: "2019:08:14 09:31:00"}}, "2019-08-14T09:31:00"),  # blank original
    ({0x8769: {36867: "0000:00:00 00:00:00"}, 306: "2019:08:15 10:00:00"}, "2019-08-15T10:00:00"),
    ({0x8769: {36867: "2019:08:14 09:30"}}, "2019-08-14T09:30:00"),  # no seconds
])
def test_exif_dates_other_cameras_write(catalog, tmp_path, exif, want):
    pid = import_photos(catalog, [write_photo(tmp_path / "d.jpg", 3, exif=exif)]).imported[0]
    assert catalog.photo(pid).taken_at == want


def test_missing_photos_are_reported_naming_the_folder_searched(catalog, tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("image,individual_id\n" + "".join(f"nope_{i}.jpg,W\n" for i in range(30)))
    rep = import_labelled(catalog, small)
    assert rep.error_count == 30 and catalog.photo_count() == 0
    for n, (where, problem) in enumerate(rep.errors):
        assert where == f"{small} line {n + 2} ({tmp_path / f'nope_{n}.jpg'})"
        assert problem == f"file not found in {tmp_path}"


def _labelled_folder(tmp_path, rows: str):
    imgs = tmp_path / "data" / "images"
    for i in range(4):
        write_photo(imgs / f"p{i}.jpg", 40 + i)  # 96x64 photos
    csv_path = tmp_path / "data" / "labels.csv"
    csv_path.write_bytes(("image,individual_id,id_known,x0,y0,x1,y1\n" + rows).encode())
    return csv_path


def test_bad_labels_rows_are_reported_with_their_line_and_the_rest_imports(catalog, tmp_path):
    """One bad row used to stop the whole import (``bad.csv: line 4: empty image name``, exit 2)."""
    csv_path = _labelled_folder(tmp_path, "\n".join([
        "p0.jpg,W1,1,1,2,50,40",  # 2: good
        ",W1,1,,,,",  # 3: empty image name
        "p1.jpg,W1,1,-1e308,-1e308,inf,inf",  # 4: non-finite box
        "p1.jpg,W\x002,1,,,,",  # 5: NUL byte in the id
        "p2.jpg,,1,,,,",  # 6: empty id with id_known=1
        "p2.jpg,W2,1,0,0,500,40",  # 7: box outside the 96x64 photo
        "p3.jpg,W2,1,,,,",  # 8: good
        "p1.jpg,W1,1,,,,",  # 9: good (the same photo as line 4, now well labelled)
    ]) + "\n")
    rep = import_labelled(catalog, csv_path)
    assert len(rep.imported) == 3 and rep.identified == 3
    lines = {int(w.split(" line ")[1].split(" ")[0]): p for w, p in rep.errors}
    assert sorted(lines) == [3, 4, 5, 6, 7]
    assert lines[3] == "empty image name"
    assert lines[4] == "malformed box: x1 is not finite ('inf')"
    assert lines[5] == "NUL byte in field 'individual_id'"
    assert lines[6] == "empty individual_id with id_known=1"
    assert "lies outside the 96x64 photo" in lines[7]
    assert all(w.startswith(f"{csv_path} line ") for w, _ in rep.errors)
    codes = sorted(i.code for i in catalog.individuals())
    assert codes == ["W1", "W2"]  # no code holds a NUL byte
    boxes = [catalog.current_box(pid) for pid in rep.imported]
    assert [b.box for b in boxes if b is not None] == [(1.0, 2.0, 50.0, 40.0)]  # only line 2's box is stored


def test_conflicting_labels_for_the_same_photo_are_reported(catalog, tmp_path):
    csv_path = _labelled_folder(tmp_path, "p0.jpg,W1,1,,,,\np0.jpg,W1,1,,,,\np0.jpg,W9,1,,,,\np1.jpg,W2,1,,,,\n")
    write_photo(tmp_path / "data" / "images" / "copy_of_p1.jpg", 41)  # same content as p1
    with open(csv_path, "a") as f:
        f.write("copy_of_p1.jpg,W3,1,,,,\n")
    rep = import_labelled(catalog, csv_path)
    assert len(rep.imported) == 2 and len(rep.duplicates) == 3
    assert [(w.split(" line ")[1].split(" ")[0], p) for w, p in rep.errors] == [
        ("4", f"same photo as photo {rep.imported[0]}, which is identified as 'W1': this row's 'W9' is not applied"),
        ("6", f"same photo as photo {rep.imported[1]}, which is identified as 'W2': this row's 'W3' is not applied"),
    ]
    assert catalog.individual_by_code("W9") is None and catalog.individual_by_code("W3") is None


def test_labels_from_a_pipe(catalog, tmp_path):
    """``flukeid import CAT --labels <(cat labels.csv) --images DIR``: the labels come through a pipe."""
    import subprocess

    from app.cli import main

    csv_path = _labelled_folder(tmp_path, "p0.jpg,W1,1,,,,\np1.jpg,W2,1,1,2,50,40\n")
    catalog.close()
    proc = subprocess.Popen(["cat", str(csv_path)], stdout=subprocess.PIPE)
    try:
        rc = main(["import", str(catalog.root), "--labels", f"/dev/fd/{proc.stdout.fileno()}",
                   "--images", str(csv_path.parent / "images"), "--no-detect", "--no-embed"])
    finally:
        proc.stdout.close()
        proc.wait(timeout=10)
    assert rc == 0
    from app.catalog import Catalog

    with Catalog.open(catalog.root, mode="read") as cat:
        assert sorted(i.code for i in cat.individuals()) == ["W1", "W2"]


def test_cli_labelled_import_exit_codes_and_messages(tmp_path, capsys):
    from app.cli import main

    cat = tmp_path / "cat"
    assert main(["new", str(cat)]) == 0
    csv_path = _labelled_folder(tmp_path, "p0.jpg,W1,1,,,,\np1.jpg,W1,1,5,5,1,1\n")
    elsewhere = tmp_path / "elsewhere.csv"
    shutil.copy(csv_path, elsewhere)
    capsys.readouterr()
    # photos not where the labels file says: every row reported naming the folder searched, and a hint
    assert main(["import", str(cat), "--labels", str(elsewhere), "--no-detect", "--no-embed"]) == 1
    err = capsys.readouterr().err
    assert f"error: {elsewhere} line 2 ({tmp_path / 'p0.jpg'}): file not found in {tmp_path}" in err
    assert "give --images DIR" in err
    # with --images: the good row imports, the bad one is reported by line, exit code 1
    assert main(["import", str(cat), "--labels", str(elsewhere), "--images", str(csv_path.parent / "images"),
                 "--no-detect", "--no-embed"]) == 1
    out = capsys.readouterr()
    assert "1 photo imported, 1 identified, 1 error" in out.out
    assert f"error: {elsewhere} line 3 (p1.jpg): malformed box: x1 <= x0 (1 <= 5)" in out.err
    assert "--images" not in out.err
    # all rows good (a duplicate is not an error): exit code 0
    csv_path.write_text("image,individual_id\np0.jpg,W1\np2.jpg,W2\n")
    assert main(["import", str(cat), "--labels", str(csv_path), "--no-detect", "--no-embed"]) == 0
    # a file that is not a labels file at all: exit code 2, nothing imported
    csv_path.write_text("file,whale\np3.jpg,W1\n")
    assert main(["import", str(cat), "--labels", str(csv_path), "--no-detect", "--no-embed"]) == 2
    assert "missing columns" in capsys.readouterr().err


def test_relink_moved_folder_by_hash(catalog, photos, tmp_path):
    import_photos(catalog, photos)
    moved = tmp_path / "moved"
    shutil.move(str(photos[0].parent), moved)
    found = relink(catalog, moved)
    assert len(found) == 5
    assert all(catalog.resolve_path(p).is_file() for p in catalog.photos())
    assert np.all([str(moved) in p.path for p in catalog.photos()])


def test_missing_thumbnail_is_rebuilt_and_heic_without_plugin_is_explained(catalog, photos, tmp_path):
    from app.services.importing import _heic_available, ensure_thumbnail

    pid = import_photos(catalog, photos[:1]).imported[0]
    thumb = catalog.thumbnail_path(catalog.photo(pid).sha256)
    thumb.unlink()
    assert ensure_thumbnail(catalog, pid) == thumb and thumb.stat().st_size > 0
    if not _heic_available():
        heic = tmp_path / "x.heic"
        heic.write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 100)
        rep = import_photos(catalog, [heic])
        assert "pillow-heif" in rep.errors[0][1]


def test_catalog_inside_the_imported_folder_is_not_imported(tmp_path, photos):
    from app.catalog import Catalog

    d = photos[0].parent
    with Catalog.create(d / "my catalog") as cat:
        assert len(import_photos(cat, [d]).imported) == 5
        again = import_photos(cat, [d])  # thumbnails now exist inside d/my catalog/thumbnails
        assert not again.imported and len(again.duplicates) == 5 and again.skipped == 0


def test_import_into_read_only_catalog_refused_up_front(tmp_path, photos):
    from app.catalog import Catalog, ReadOnlyError

    Catalog.create(tmp_path / "c").close()
    with Catalog.open(tmp_path / "c", mode="read") as ro:
        with pytest.raises(ReadOnlyError, match="read-only"):
            import_photos(ro, photos)
    assert not list((tmp_path / "c" / "thumbnails").iterdir())


def test_a_failing_detector_on_one_photo_does_not_stop_the_import(catalog, photos):
    class Flaky:
        calls = 0

        def detect(self, rgb):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("onnxruntime exploded")
            return FakeDetector().detect(rgb)

    rep = import_photos(catalog, photos, detector=Flaky())
    assert len(rep.imported) == 4 and len(rep.errors) == 1
    assert "RuntimeError: onnxruntime exploded" in rep.errors[0][1]
    assert all(catalog.current_box(p) is not None for p in rep.imported)
