"""Labels CSV reading: formats, bad files named, streaming of huge files."""

from __future__ import annotations

import tracemalloc

import pytest

from app.catalog.csv_io import read_label_rows
from app.services.importing import import_labelled
from model.api import DataError


def test_labels_and_kaggle_rows(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("image,individual_id,id_known,x0,y0,x1,y1\na.jpg,W1,1,1,2,3,4\nb.jpg,W2,0,,,,\n\nc.jpg,,1,,,,\n")
    rows = list(read_label_rows(p))
    assert [(r.image, r.individual, r.box) for r in rows] == [
        ("a.jpg", "W1", (1.0, 2.0, 3.0, 4.0)), ("b.jpg", None, None), ("c.jpg", None, None)]
    k = tmp_path / "train.csv"
    k.write_bytes("\ufeffImage,Id\nx.jpg,w_1\ny.jpg,new_whale\n".encode())  # with a BOM
    assert [(r.image, r.individual) for r in read_label_rows(k)] == [("x.jpg", "w_1"), ("y.jpg", None)]


@pytest.mark.parametrize("content,match", [
    ("image,individual_id,x0,y0,x1,y1\na.jpg,W,1,2,zero,4\n", "line 2: box is not numeric"),
    ("image,individual_id,x0,y0,x1,y1\na.jpg,W,5,5,1,1\n", "line 2: box .* is empty"),
    ("image,individual_id\n,W\n", "line 2: empty image name"),
])
def test_bad_rows_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "l.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=rf"l\.csv: {match}"):
        list(read_label_rows(p))


def test_huge_csv_is_streamed_and_missing_images_reported(tmp_path, catalog):
    p = tmp_path / "big.csv"
    n = 40_000
    with open(p, "w") as f:
        f.write("image,individual_id\n")
        for i in range(n):
            f.write(f"img_{i}.jpg,W{i % 1000}\n")
    tracemalloc.start()
    count = sum(1 for _ in read_label_rows(p))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n and peak < 2_000_000  # a list of 40k rows would take about 10 MB

    small = tmp_path / "small.csv"
    small.write_text("image,individual_id\n" + "".join(f"nope_{i}.jpg,W\n" for i in range(30)))
    rep = import_labelled(catalog, small)
    assert rep.error_count == 30 and all("not found" in m for _, m in rep.errors)
    assert catalog.photo_count() == 0
