"""Exports: identifications round-trip through the labels importer, Kaggle, sightings, formula escaping."""

from __future__ import annotations

import csv

import pytest

from app.catalog import Catalog
from app.catalog.csv_io import escape_cell, write_csv_atomic
from app.services import decisions as D
from app.services import exporting
from app.services.importing import import_labelled, import_photos
from tests.app.conftest import FakeDetector, write_photo


@pytest.mark.parametrize("raw,want", [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1+2", "'+1+2"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("-12.5", "-12.5"), ("Notch", "Notch"), (None, ""), (3.25, "3.25"),
])
def test_escape_cell(raw, want):
    assert escape_cell(raw) == want


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_identifications_round_trip_and_escaping(catalog, tmp_path):
    exif = {0x8769: {36867: "2021:07:02 08:00:00"}}
    ps = [write_photo(tmp_path / "in" / f"p{i}.jpg", i, exif=exif if i < 2 else None) for i in range(3)]
    ids = import_photos(catalog, ps, detector=FakeDetector()).imported
    a = D.new_individual(catalog, ids[0], code="=cmd|' /C calc'!A0", who="@ann").individual_id
    D.confirm(catalog, ids[1], a, rank=1, score=0.8, model_version="m1")
    out = tmp_path / "ids.csv"
    assert exporting.export_identifications(catalog, out) == 3
    rows = _read(out)
    assert rows[0][:2] == ["image", "individual_id"]
    assert rows[1][1] == "'=cmd|' /C calc'!A0" and rows[1][10] == "'@ann"
    assert rows[2][2] == "2021-07-02T08:00:00" and rows[2][9] == "confirmed_match" and rows[2][12] == "m1"
    assert rows[3][1] == ""
    assert not list(tmp_path.glob(".ids.csv.*"))  # no temporary file left

    # round trip: the export is a labels.csv (codes come back escaped, boxes exactly); its image
    # paths are absolute, so re-importing it takes the explicit option (issue 19.2)
    other = Catalog.create(tmp_path / "other")
    refused = import_labelled(other, out)
    assert not refused.imported and len(refused.errors) == 3
    assert all("absolute path" in problem for _, problem in refused.errors)
    rep = import_labelled(other, out, allow_absolute=True)
    assert len(rep.imported) == 3 and rep.identified == 2
    back = other.individuals()
    assert [i.code for i in back] == ["'=cmd|' /C calc'!A0"]
    assert sorted(other.photos_of(back[0].id)) == sorted(p.id for p in other.photos()[:2])
    assert other.current_box(other.photos()[0].id).box == pytest.approx(catalog.current_box(ids[0]).box)
    other.close()


def test_kaggle_and_sightings(catalog, tmp_path):
    exifs = ["2020:01:01 10:00:00", "2020:01:01 11:00:00", "2020:03:05 09:00:00", None]
    ps = [write_photo(tmp_path / "in" / f"p{i}.jpg", i, exif={0x8769: {36867: e}} if e else None)
          for i, e in enumerate(exifs)]
    ids = import_photos(catalog, ps).imported
    x = D.new_individual(catalog, ids[0]).individual_id
    D.confirm(catalog, ids[1], x)
    y = D.new_individual(catalog, ids[2]).individual_id
    assert exporting.export(catalog, "kaggle", tmp_path / "k.csv") == 4
    assert _read(tmp_path / "k.csv") == [["Image", "Id"], ["p0.jpg", "HW-0001"], ["p1.jpg", "HW-0001"],
                                         ["p2.jpg", "HW-0002"], ["p3.jpg", "new_whale"]]
    D.confirm(catalog, ids[3], y)
    exporting.export(catalog, "sightings", tmp_path / "s.csv")
    assert _read(tmp_path / "s.csv") == [["individual_id", "2020-01-01", "2020-03-05", "unknown"],
                                         ["HW-0001", "2", "0", "0"], ["HW-0002", "0", "1", "1"]]
    with pytest.raises(ValueError, match="unknown export format"):
        exporting.export(catalog, "xml", tmp_path / "x")


def test_failed_export_keeps_previous_file(tmp_path):
    out = tmp_path / "e.csv"
    out.write_text("old complete file\n")

    def rows():
        yield ["a"]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv_atomic(out, ["h"], rows())
    assert out.read_text() == "old complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["e.csv"]
