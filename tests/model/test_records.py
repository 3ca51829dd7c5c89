"""Labels readers: our labels.csv and Kaggle train.csv, per-row problems, whole-file errors."""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.data.records import (
    LabelledPhoto,
    LabelledSet,
    escape_cell,
    open_labels,
    read_labels,
    unescape_cell,
    write_labels,
)
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
    assert ls.records[0] == LabelledPhoto(folder / "images" / "a.jpg", "w1", (1.0, 2.0, 30.0, 40.0), True)
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
        ("0003.jpg", None, False, None),  # an empty id is unidentified, in every format
    ]
    assert ls.problems == []


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
        LabelledPhoto(folder / "images" / "a.jpg", "w1", (1.0, 2.0, 30.5, 40.0), True),
        LabelledPhoto(folder / "images" / "sub" / "d.jpg", None, None, False),
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


# --- the streaming reader (moved from tests/app/test_csv_io.py) ----------------------------------


def test_streamed_rows_of_both_formats(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text(HEADER + "a.jpg,W1,1,1,2,3,4\nb.jpg,W2,0,,,,\n\nc.jpg,,1,,,,\nd.jpg,,,,,,\n")
    rows = open_labels(p)
    got = [(r.path.name, r.individual, r.box, r.line) for r in rows]
    # one rule for app and model: an empty id is unidentified, unless id_known=1 contradicts it
    assert got == [("a.jpg", "W1", (1.0, 2.0, 3.0, 4.0), 2), ("b.jpg", None, None, 3), ("d.jpg", None, None, 6)]
    assert [str(i) for i in rows.issues] == ["labels.csv line 5 (c.jpg): empty individual_id with id_known=1"]
    k = tmp_path / "train.csv"
    k.write_bytes("\ufeffImage,Id\nx.jpg,w_1\ny.jpg,new_whale\n".encode())  # with a BOM
    assert [(r.path.name, r.individual) for r in open_labels(k)] == [("x.jpg", "w_1"), ("y.jpg", None)]


@pytest.mark.parametrize("content,match", [
    ("image,individual_id,x0,y0,x1,y1\na.jpg,W,1,2,zero,4\nb.jpg,W,,,,\n", r"line 2 \(a\.jpg\): malformed box: not numbers \(x1='zero'\)"),
    ("image,individual_id,x0,y0,x1,y1\na.jpg,W,5,5,1,1\nb.jpg,W,,,,\n", r"line 2 \(a\.jpg\): malformed box: x1 <= x0 \(1 <= 5\)"),
    ("image,individual_id\n,W\nb.jpg,W\n", r"line 2 \(no image\): empty image name"),
    # found by the random-bytes property test: "/" read as the root folder, a row with no file name
    ("image,individual_id\n/\nb.jpg,W\n", r"line 2 \(/\): the image name ends in a folder, not a photo file"),
    ("image,individual_id\nphotos/,W\nb.jpg,W\n", r"line 2 \(photos/\): the image name ends in a folder, not a photo file"),
    ("image,individual_id\nphotos\\..,W\nb.jpg,W\n", r"line 2 \(photos\\\.\.\): the image name ends in a folder, not a photo file"),
])
def test_bad_rows_name_file_and_line_and_the_rest_loads(tmp_path, content, match):
    p = tmp_path / "l.csv"
    p.write_text(content)
    rows = open_labels(p)
    assert [r.path.name for r in rows] == ["b.jpg"]
    assert len(rows.issues) == 1 and re.fullmatch(rf"l\.csv {match}", str(rows.issues[0])), rows.issues


_PEAK_SCRIPT = """
import sys, tracemalloc
from model.data.records import open_labels
limit = int(sys.argv[2]) or None
tracemalloc.start()
rows = open_labels(sys.argv[1])
n = 0
for _ in rows:
    n += 1
    if n == limit:
        break
rows.close()
print(n, tracemalloc.get_traced_memory()[1])
"""


def streaming_peak(path: Path, rows: int = 0) -> tuple[int, int]:
    """(rows read, peak bytes traced) while :func:`open_labels` reads ``path`` (the first ``rows``; 0: all).

    Measured in a fresh interpreter: Python 3.11's pathlib interns every path part, and inside
    pytest a resize of the interpreter-wide table of interned strings (megabytes, once) would be
    counted as the reader's.
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(rows)], capture_output=True,
                         text=True, env=env, cwd=root, timeout=600, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_huge_csv_is_streamed(tmp_path):
    p = tmp_path / "big.csv"
    n = 40_000
    with open(p, "w") as f:
        f.write("image,individual_id\n")
        for i in range(n):
            f.write(f"img_{i}.jpg,W{i % 1000}\n")
    count, peak = streaming_peak(p)
    assert count == n and peak < 2_000_000  # a list of 40k rows would take about 10 MB


# --- defects of the old readers (issues 18 and 19) -----------------------------------------------


def test_a_pipe_is_read_without_seeking(tmp_path):
    """``--labels <(cat labels.csv)``: the old app reader seeked back and failed on a pipe."""
    (tmp_path / "labels.csv").write_text(HEADER + "a.jpg,W1,1,,,,\nb.jpg,W2,1,1,2,3,4\n")
    proc = subprocess.Popen(["cat", str(tmp_path / "labels.csv")], stdout=subprocess.PIPE)
    try:
        fd = proc.stdout.fileno()
        rows = open_labels(f"/dev/fd/{fd}", tmp_path)
        assert [(r.path, r.individual) for r in rows] == [(tmp_path / "a.jpg", "W1"), (tmp_path / "b.jpg", "W2")]
    finally:
        proc.stdout.close()
        proc.wait(timeout=10)


@pytest.mark.parametrize("field,row", [
    ("image", "a\x00.jpg,W1,1,,,,"),
    ("individual_id", "a.jpg,W\x001,1,,,,"),
    ("x0", "a.jpg,W1,1,\x00,2,3,4"),
])
def test_nul_bytes_in_a_field_skip_that_row_naming_the_field(folder, field, row):
    (folder / "labels.csv").write_bytes((HEADER + row + "\nb.jpg,W2,1,,,,\n").encode())
    ls = read_labels(folder / "labels.csv")
    assert [(r.path.name, r.individual) for r in ls.records] == [("b.jpg", "W2")]
    assert len(ls.problems) == 1 and ls.problems[0].startswith("labels.csv line 2 (")
    assert f"NUL byte in field '{field}'" in ls.problems[0]
    assert "\x00" not in ls.problems[0]


@pytest.mark.parametrize("header", ["image,individual_id,image", "Image,individual_id,x0,y0,x1,y1,X0",
                                    "image,Id,id"])
def test_duplicate_column_names_are_refused(tmp_path, header):
    p = tmp_path / "dup.csv"
    p.write_text(header + "\na.jpg,W1,b.jpg,1,2,3,4\n")
    with pytest.raises(DataError, match=r"dup\.csv: column '\w+' appears 2 times \(columns \d, \d\)"):
        open_labels(p)


def test_a_repeated_column_the_reader_does_not_use_is_fine(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text("image,individual_id,note,note\na.jpg,W1,x,y\n")
    assert [r.individual for r in open_labels(p)] == ["W1"]


@pytest.mark.parametrize("box,words", [
    ("-1e308,-1e308,inf,inf", "x1 is not finite ('inf')"),
    ("nan,0,10,10", "x0 is not finite ('nan')"),
    ("0,-inf,10,10", "y0 is not finite ('-inf')"),
    ("-1e308,0,10,10", "x0 = -1e+308 is out of range"),
    ("0,0,1e308,10", "x1 = 1e+308 is out of range"),
    ("-50,0,10,10", "x0 = -50 is out of range"),
    ("0,20,10,10", "y1 <= y0 (10 <= 20)"),
    ("0,0,0,10", "x1 <= x0 (0 <= 0)"),
])
def test_non_finite_out_of_range_and_inverted_boxes_are_refused_per_row(tmp_path, box, words):
    p = tmp_path / "boxes.csv"
    p.write_text(f"image,individual_id,x0,y0,x1,y1\na.jpg,W1,{box}\nb.jpg,W2,1,2,30,40\n")
    ls = read_labels(p, tmp_path, check_images=False)
    assert [(r.path.name, r.box) for r in ls.records] == [("b.jpg", (1.0, 2.0, 30.0, 40.0))]
    assert len(ls.problems) == 1 and ls.problems[0].startswith("boxes.csv line 2 (a.jpg): malformed box: ")
    assert words in ls.problems[0], ls.problems[0]


@pytest.mark.parametrize("code", ["+cmd|calc", "=1+1", "-2+3", "@SUM(A1)", "'quoted", "''=x", "\tTAB", "=", "-7"])
def test_formula_like_codes_and_names_round_trip_exactly(tmp_path, code):
    recs = [LabelledPhoto(tmp_path / "images" / f"{code.strip()}.jpg", code, (1.0, 2.0, 3.5, 4.0)),
            LabelledPhoto(tmp_path / "images" / "plain.jpg", "W1")]
    path = write_labels(recs, tmp_path / "labels.csv", tmp_path / "images")
    assert "\n=" not in path.read_text() and "\n+" not in path.read_text()  # nothing a spreadsheet would run
    ls = read_labels(path, tmp_path / "images", check_images=False)
    assert ls.problems == [] and ls.records == recs


def test_unescape_is_the_inverse_of_escape():
    for text in ["", "a", "'", "''", "'a", "'=", "=", "=a", "+1", "-1", "-x", "@", "\t", "\r", "'\t", "x'"]:
        assert unescape_cell(escape_cell(text)) == text


def test_conflicting_labels_for_the_same_photo_are_reported(folder):
    (folder / "labels.csv").write_text(HEADER + "a.jpg,W1,1,,,,\nb.jpg,W2,1,,,,\na.jpg,W3,1,,,,\n./b.jpg,W2,1,,,,\n")
    ls = read_labels(folder / "labels.csv")
    assert [(r.path.name, r.individual) for r in ls.records] == [("a.jpg", "W1"), ("b.jpg", "W2")]
    assert ls.problems[0].startswith("labels.csv line 4 (a.jpg): duplicate photo (first listed on line 2)")
    assert "'W1' there, 'W3' here" in ls.problems[0]
    assert ls.problems[1].startswith("labels.csv line 5 (b.jpg): duplicate photo (first listed on line 3); skipped")


def test_size_and_line_limits_stop_binary_input(tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("image,individual_id\n" + "a.jpg,W1\n" * 200)
    with pytest.raises(DataError, match=r"big\.csv: labels file is 1\.8 kB; the limit is 1\.0 kB"):
        open_labels(big, max_bytes=1000)
    proc = subprocess.Popen(["cat", str(big)], stdout=subprocess.PIPE)  # a stream has no size to check first
    try:
        rows = open_labels(f"/dev/fd/{proc.stdout.fileno()}", max_bytes=1000)
        assert 100 < sum(1 for _ in rows) < 112  # the rows in the first 1000 bytes
        assert str(rows.issues[-1]).endswith("the file grows past the 1.0 kB limit; reading stopped")
    finally:
        proc.stdout.close()
        proc.wait(timeout=10)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="line 1 is longer than 1 MiB"):
        open_labels("/dev/zero")  # endless NULs: refused after 1 MiB, not read into memory
    assert time.monotonic() - t0 < 10
    long = tmp_path / "long.csv"
    long.write_bytes(b"image,individual_id\na.jpg,W1\n" + b"x" * (2 << 20) + b"\nb.jpg,W2\n")
    rows = open_labels(long)
    assert [r.individual for r in rows] == ["W1"]
    assert "line 3 is longer than 1 MiB" in str(rows.issues[-1]) and "reading stopped" in str(rows.issues[-1])


def test_bytes_that_are_not_utf8_past_the_start_skip_only_their_row(tmp_path):
    p = tmp_path / "late.csv"
    good = "".join(f"img_{i}.jpg,W{i}\n" for i in range(5000))  # past the first 64 KiB
    p.write_bytes(b"image,individual_id\n" + good.encode() + "baleine_é.jpg,W\n".encode("latin-1") + b"z.jpg,Z\n")
    rows = open_labels(p)
    got = [r.individual for r in rows]
    assert len(got) == 5001 and got[-1] == "Z"
    assert len(rows.issues) == 1 and "line 5002" in str(rows.issues[0]) and "not UTF-8" in str(rows.issues[0])


def test_keep_selects_rows_without_reporting_them(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("image,individual_id,crop\na.jpg,W,full_frame\nb.jpg,W,fluke_crop\nc.jpg,W,\n")
    rows = open_labels(p, keep={"crop": ["full_frame"], "species": ["humpback_whale"]})
    assert [r.path.name for r in rows] == ["a.jpg", "c.jpg"] and rows.issues == []
