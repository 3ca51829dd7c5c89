"""Safety rules checked on the source (AST scans) and at run time (no network).

- torch.load always with ``weights_only=True``; nothing in app/ or model/ unpickles, evals or
  ``yaml.load``s data (no pickle/marshal/shelve/dill imports, no eval/exec builtins, no
  ``np.load(..., allow_pickle=True)``).
- SQL only with parameters. The catalog store builds a few statements with f-strings; each
  interpolated value must be one of the names listed in SQL_FSTRING_NAMES (placeholders,
  constant clauses, table/column names from literal ``dict(...)`` keywords); no SQL formatting
  anywhere else in app/.
- Every CSV, user-facing export or internal labels file, goes through ``write_csv_atomic``
  (which escapes each cell, and which the labels reader undoes); no other ``csv.writer``.
- Importing, detecting, embedding and matching never open a socket.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "app").rglob("*.py"), *(ROOT / "model").rglob("*.py")])

# interpolations allowed inside f-string SQL in app/catalog/store.py (what each holds):
SQL_FSTRING_NAMES = {
    "want": "'FULL' or 'NORMAL' (synchronous pragma, chosen from a bool)",
    "table": "table name: every _insert call passes a string literal (checked below)",
    "cols": "column names: keys of a literal dict(...) of keywords (checked below)",
    "marks": "'?, ?, ...' placeholders",
    "where": "a constant WHERE clause chosen from a bool",
    "sets": "'col = ?' for columns checked against an allow-list in update_individual",
    "self._CURRENT_IDS": "a constant sub-query (class attribute)",
    "self._CURRENT_BOXES": "a constant sub-query (class attribute: each photo's latest box)",
    "sql": "match_decisions(): constant clauses joined with AND, values passed as ? parameters",
}
# the one module that writes CSV: write_csv_atomic (escapes every cell), which write_labels uses too
INTERNAL_CSV_WRITERS = {
    "model/data/records.py": "write_csv_atomic itself; write_labels (training, demo, synthetic labels) calls it",
}
SQL_CALLS = {"execute", "executemany", "executescript", "_query", "_one"}


def _trees():
    for path in SOURCES:
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def test_sources_were_found():
    assert len(SOURCES) > 30 and any(p.name == "store.py" for p in SOURCES)


def test_torch_load_always_weights_only():
    loads, bad = 0, []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load":
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{rel}:{node.lineno}")
    assert loads >= 1 and not bad, f"torch.load without weights_only=True: {bad}"


def test_nothing_unpickles_evals_or_yaml_loads():
    bad = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any((n or "").split(".")[0] in {"pickle", "cPickle", "marshal", "shelve", "dill", "joblib"}
                       for n in names):
                    bad.append(f"{rel}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in {"eval", "exec", "yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads"}:
                    bad.append(f"{rel}:{node.lineno} calls {name}")
                if name.endswith("np.load") or name == "numpy.load":
                    for k in node.keywords:
                        if k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and not k.value.value):
                            bad.append(f"{rel}:{node.lineno} np.load(allow_pickle=...)")
    assert not bad, bad


def _formatted_sql(arg) -> list[str] | None:
    """The interpolated expressions of a formatted SQL string argument, or None when it is a plain literal."""
    if isinstance(arg, ast.JoinedStr):
        return [ast.unparse(v.value) for v in arg.values if isinstance(v, ast.FormattedValue)]
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mod):
        return ["<% formatting>"]
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):  # concatenation: the non-literal parts
        return [p for side in (arg.left, arg.right)
                for p in (_formatted_sql(side) or ([] if isinstance(side, ast.Constant) else [ast.unparse(side)]))]
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format":
        return ["<str.format>"]
    return None


def test_sql_is_parameterised():
    found, bad = 0, []
    for rel, tree in _trees():
        if not rel.startswith("app/"):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SQL_CALLS and node.args):
                continue
            parts = _formatted_sql(node.args[0])
            if parts is None:
                continue
            found += 1
            if rel != "app/catalog/store.py" or any(p not in SQL_FSTRING_NAMES for p in parts):
                bad.append(f"{rel}:{node.lineno} interpolates {parts}")
    assert not bad, f"SQL built from values (use ? parameters): {bad}"
    assert found >= 1  # the scan sees the store's f-strings (so it would see a bad one)


def test_insert_table_and_columns_are_literals():
    tree = ast.parse((ROOT / "app/catalog/store.py").read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "_insert"]
    assert len(calls) >= 5
    for c in calls:
        table, values = c.args
        assert isinstance(table, ast.Constant) and isinstance(table.value, str), ast.unparse(c)
        assert (isinstance(values, ast.Call) and _dotted(values.func) == "dict" and not values.args
                and all(k.arg for k in values.keywords)), ast.unparse(c)


def test_every_csv_writer_is_an_escaping_export_or_an_internal_file():
    writers = set()
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func) in {"csv.writer", "csv.DictWriter"}:
                writers.add(rel)
    assert writers <= set(INTERNAL_CSV_WRITERS), writers - set(INTERNAL_CSV_WRITERS)
    exporting = (ROOT / "app/services/exporting.py").read_text(encoding="utf-8")
    tree = ast.parse(exporting)
    export_fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("export_")]
    assert len(export_fns) >= 3
    # every export writes through _write, which checks the path (check_output) and then writes
    # through write_csv_atomic (escape, temporary name, fsync, rename)
    writer = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_write")
    called = {_dotted(n.func) for n in ast.walk(writer) if isinstance(n, ast.Call)}
    assert {"check_output", "write_csv_atomic"} <= called, called
    for fn in export_fns:
        called = {_dotted(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
        assert "_write" in called, f"{fn.name} does not write through _write"
        assert "write_csv_atomic" not in called, f"{fn.name} skips the output check"
    assert "open(" not in exporting  # no export writes a file any other way


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test that forbids it")

    for name in ("socket", "create_connection", "getaddrinfo", "socketpair"):
        monkeypatch.setattr(socket, name, refuse)
    return attempts


def test_import_detect_embed_match_and_export_use_no_network(tmp_path, tiny_bundle, no_network):
    import shutil

    from app.catalog import Catalog
    from app.services import decisions as D
    from app.services import exporting
    from app.services.importing import import_photos
    from app.services.matching import load_engine, match_file, match_photo
    from model.api import default_detector
    from tests.app.conftest import write_photo

    photos = [write_photo(tmp_path / "field" / f"n{i}.jpg", 4000 + i, size=(160, 120)) for i in range(6)]
    with Catalog.create(tmp_path / "cat") as cat:
        shutil.copytree(tiny_bundle, cat.models_dir / "tiny")
        cat.add_model("tiny", cat.models_dir / "tiny", activate=True)
        engine = load_engine(cat, device="cpu")
        detector = default_detector()
        rep = import_photos(cat, [tmp_path / "field"], detector=detector, engine=engine)
        assert len(rep.imported) == 6 and not rep.errors
        D.new_individual(cat, rep.imported[0], model_version="tiny")
        D.new_individual(cat, rep.imported[1], model_version="tiny")
        result = match_photo(cat, rep.imported[2], engine, k=2)
        assert len(result.candidates) == 2
        assert match_file(cat, photos[3], engine, detector=detector, k=1).candidates
        exporting.export(cat, "identifications", tmp_path / "ids.csv")
    assert no_network == []
