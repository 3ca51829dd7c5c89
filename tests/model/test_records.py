"""Labels readers: our labels.csv and Kaggle train.csv, per-row problems, whole-file errors."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.data.records import LabelledSet, Record, read_labels, write_labels
from model.errors import DataError

HEADER = "image,individual_id,id_known,x0,y0,x1,y1\n"


def _photo(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg", "sub/d.jpg"):
        _photo(tmp_path / "images" / name)
    (tmp_path / "images" / "text.jpg").write_text("not an image")
    (tmp_path / "images" / "empty.jpg").write_bytes(b"")
    return tmp_path


def test_reads_our_format(folder):
    (folder / "labels.csv").write_text(
        HEADER + "a.jpg,w1,1,1,2,30,40\nb.jpg,w1,1,,,,\nsub/d.jpg,w2,1,0,0,64,48\nc.jpg,unknown,0,,,,\n"
    )
    ls = read_labels(folder / "labels.csv")
    assert ls.problems == [] and ls.format == "flukeid"
    assert ls.records[0] == Record(folder / "images" / "a.jpg", "w1", (1.0, 2.0, 30.0, 40.0), True)
    assert ls.records[1].box is None
    assert ls.records[2].path == folder / "images" / "sub" / "d.jpg"
    assert ls.records[3].individual is None and ls.records[3].id_known is False
    assert ls.individuals == {"w1", "w2"}
    assert ls.photos_per_individual() == {"w1": 2, "w2": 1}


def test_bad_rows_are_reported_and_skipped(folder):
    rows = [
        "a.jpg,w1,1,1,2,30,40",  # line 2: good
        "missing.jpg,w1,1,,,,",  # 3: missing file
        "text.jpg,w2,1,,,,",  # 4: not an image
        "empty.jpg,w2,1,,,,",  # 5: empty file
        "b.jpg,w2,1,1,2,x,40",  # 6: box not numbers
        "b.jpg,w2,1,1,2,,",  # 7: box partly empty
        "b.jpg,w2,1,30,2,10,40",  # 8: x1 < x0
        "b.jpg,w2,1,0,0,500,40",  # 9: box outside the 64x48 photo
        "a.jpg,w3,1,,,,",  # 10: duplicate of line 2
        "c.jpg,,1,,,,",  # 11: empty id
        "c.jpg,w4,maybe,,,,",  # 12: bad id_known
        "c.jpg,w4,1,,,,,extra",  # 13: too many values
        ",w4,1,,,,",  # 14: empty image
        "sub/d.jpg,w5,1,,,,",  # 15: good
    ]
    (folder / "labels.csv").write_text(HEADER + "\n".join(rows) + "\n")
    ls = read_labels(folder / "labels.csv")
    assert [r.path.name for r in ls.records] == ["a.jpg", "d.jpg"]
    assert len(ls.problems) == 12
    expect = {
        3: "not found",
        4: "not a readable image",
        5: "empty",
        6: "not numbers",
        7: "empty",
        8: "x1 <= x0",
        9: "outside the 64x48 photo",
        10: "duplicate photo (first listed on line 2)",
        11: "empty individual_id",
        12: "id_known",
        13: "more values",
        14: "empty image name",
    }
    for (line, words), message in zip(expect.items(), ls.problems, strict=True):
        assert message.startswith(f"labels.csv line {line} ("), message
        assert words in message, message


def test_check_images_off_skips_file_checks(folder):
    (folder / "labels.csv").write_text(HEADER + "missing.jpg,w1,1,,,,\n")
    ls = read_labels(folder / "labels.csv", check_images=False)
    assert ls.problems == [] and ls.records[0].path.name == "missing.jpg"


def test_reads_kaggle_train_csv(tmp_path):
    for name in ("0001.jpg", "0002.jpg", "0003.jpg"):
        _photo(tmp_path / "train" / name)
    (tmp_path / "train.csv").write_text("Image,Id\n0001.jpg,w_f48451c\n0002.jpg,new_whale\n0003.jpg,\n")
    ls = read_labels(tmp_path / "train.csv")
    assert ls.format == "kaggle"
    assert [(r.path.name, r.individual, r.id_known, r.box) for r in ls.records] == [
        ("0001.jpg", "w_f48451c", True, None),
        ("0002.jpg", None, False, None),
    ]
    assert len(ls.problems) == 1 and "train.csv line 4 (0003.jpg): empty Id" in ls.problems[0]


def test_handles_bom_and_crlf(folder):
    (folder / "labels.csv").write_bytes(("\ufeff" + HEADER + "a.jpg,w1,1,,,,\r\nb.jpg,w2,1,,,,\r\n").encode())
    ls = read_labels(folder / "labels.csv")
    assert ls.problems == [] and [r.individual for r in ls.records] == ["w1", "w2"]


def test_images_dir_argument(folder):
    (folder / "elsewhere.csv").write_text("image,individual_id\nd.jpg,w1\n")
    ls = read_labels(folder / "elsewhere.csv", images_dir=folder / "images" / "sub")
    assert ls.problems == [] and ls.records[0].path == folder / "images" / "sub" / "d.jpg"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"image,name\na.jpg,w1\n", "'individual_id' is missing"),
        (b"file,Id\na.jpg,w1\n", "'image' is missing"),
        ("image,individual_id\nä.jpg,wé\n".encode("latin-1"), "not UTF-8"),
        (b"image,individual_id\x00\n", "NUL"),
    ],
)
def test_whole_file_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words) as info:
        read_labels(path)
    assert str(path) in str(info.value)


def test_missing_labels_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "nope.csv")


def test_write_then_read_round_trip(folder):
    records = [
        Record(folder / "images" / "a.jpg", "w1", (1.0, 2.0, 30.5, 40.0), True),
        Record(folder / "images" / "sub" / "d.jpg", None, None, False),
    ]
    path = write_labels(records, folder / "out" / "labels.csv", folder / "images")
    ls = read_labels(path, folder / "images")
    assert ls.problems == []
    assert ls.records == records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.text(alphabet=string.printable.replace("\x0b", "").replace("\x0c", ""), max_size=8), max_size=9
        ),
        max_size=8,
    )
)
def test_garbage_rows_never_crash(folder, rows):
    """Any rows after a valid header load or are reported one by one; nothing else happens."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    (folder / "labels.csv").write_text(HEADER + buf.getvalue())
    try:
        ls = read_labels(folder / "labels.csv")
    except DataError as exc:  # only a CSV the csv module cannot parse
        assert "labels.csv" in str(exc)
        return
    assert isinstance(ls, LabelledSet)
    non_blank = sum(1 for r in rows if any(v.strip() for v in r))
    assert len(ls.records) + len(ls.problems) == non_blank
    for message in ls.problems:
        assert message.startswith("labels.csv line ")
    for r in ls.records:
        assert r.path.is_file() and (r.individual is None or r.individual.strip())


def test_happywhale_2022_layout_reads_as_our_format(tmp_path):
    _photo(tmp_path / "train_images" / "00021adfb725ed.jpg")
    (tmp_path / "train.csv").write_text(
        "image,species,individual_id\n00021adfb725ed.jpg,humpback_whale,cadddb1636b9\n"
    )
    ls = read_labels(tmp_path / "train.csv")
    assert ls.problems == [] and ls.records[0].individual == "cadddb1636b9"


def test_reads_the_shared_real_data(shared_data):
    """The real sets load without a single bad row (their layout is the format's reference)."""
    small = read_labels(shared_data / "humpback_flukes_v1" / "labels.csv")
    assert small.problems == []
    assert len(small.records) >= 70 and len(small.individuals) >= 40
    assert any(r.box is not None for r in small.records)
    assert any(not r.id_known and r.individual is None for r in small.records)
    big = read_labels(shared_data / "cetacean_photoid_eval_v1" / "labels.csv")
    assert big.problems == [] and len(big.records) > 3000
