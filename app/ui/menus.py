"""The window's menus, toolbar and actions, and the help it shows (built once by MainWindow).

The actions are set as attributes of the window (``window.import_act``, ``window.undo_act``, ...),
which enables them as a catalog opens; their slots are the window's methods.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox

from app import __version__


def action(parent, text: str, slot, shortcut=None, tip: str = "") -> QAction:
    a = QAction(text, parent)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    if tip:
        a.setStatusTip(tip)
        a.setToolTip(tip)
    a.triggered.connect(slot)
    return a


def build_menus(w, views: tuple[str, ...]) -> None:
    """File, Edit, View, Model and Help menus and the main toolbar of ``w`` (a MainWindow)."""
    mb = w.menuBar()
    w.new_act = action(w, "&New catalog…", w.new_catalog_dialog, QKeySequence.StandardKey.New)
    w.open_act = action(w, "&Open catalog…", w.open_catalog_dialog, QKeySequence.StandardKey.Open)
    w.import_act = action(w, "&Import photos…", w.import_photos_dialog, "Ctrl+I",
                          "Add field photos (a folder or files) to the catalog")
    w.import_labelled_act = action(w, "Import &labelled catalog…", w.import_labelled_dialog,
                                   None, "Bring in past work: labels.csv or Kaggle train.csv")
    w.export_act = action(w, "&Export…", w.export_dialog, "Ctrl+E")
    w.relink_act = action(w, "&Relink moved photos…", w.relink_dialog)
    w.quit_act = quit_act = action(w, "&Quit", w.close)
    # Ctrl+Q everywhere: some platforms (the offscreen one, plain X11 sessions) bind no Quit key
    quit_act.setShortcuts(keys(QKeySequence.StandardKey.Quit, "Ctrl+Q"))
    m = mb.addMenu("&File")
    for a in (w.new_act, w.open_act):
        m.addAction(a)
    w.recent_menu = m.addMenu("Open &recent")
    m.addSeparator()
    for a in (w.import_act, w.import_labelled_act, w.export_act, w.relink_act):
        m.addAction(a)
    m.addSeparator()
    m.addAction(quit_act)

    w.undo_act = w.undo_stack.createUndoAction(w, "&Undo")
    w.undo_act.setShortcut(QKeySequence.StandardKey.Undo)
    w.redo_act = w.undo_stack.createRedoAction(w, "&Redo")
    # the keys the user guide names, on every platform, plus the platform's own
    w.redo_act.setShortcuts(keys(QKeySequence.StandardKey.Redo, "Ctrl+Shift+Z", "Ctrl+Y"))
    m = mb.addMenu("&Edit")
    m.addAction(w.undo_act)
    m.addAction(w.redo_act)

    m = mb.addMenu("&View")
    w.view_acts = []
    for i, name in enumerate(("&Photos", "&Box review", "&Match review", "&Individuals")):
        a = action(w, name, lambda _=False, i=i: w.show_view(views[i]), f"Ctrl+{i + 1}")
        m.addAction(a)
        w.view_acts.append(a)
    m.addSeparator()
    w.refresh_act = action(w, "Re&fresh", w.refresh, QKeySequence.StandardKey.Refresh)
    m.addAction(w.refresh_act)

    m = mb.addMenu("&Model")
    w.retrain_act = action(w, "&Retrain…", w.open_retrain_dialog)
    w.versions_act = action(w, "Model &versions…", w.open_model_versions)
    w.device_act = action(w, "&Device…", lambda _=False: show_device(w))
    w.calibrate_act = action(
        w, "&Calibrate match confidence", w.calibrate,
        tip="Fit the match percentages on this catalog's identified photos (flukeid calibrate)")
    for a in (w.retrain_act, w.versions_act, w.calibrate_act, w.device_act):
        m.addAction(a)

    m = mb.addMenu("&Help")
    m.addAction(action(w, "&User guide", lambda _=False: open_user_guide(w), QKeySequence.StandardKey.HelpContents))
    m.addAction(action(w, "&About flukeid", lambda _=False: about(w)))

    tb = w.addToolBar("Main")
    tb.setObjectName("mainToolbar")
    tb.setMovable(False)
    for a in (w.open_act, w.import_act):
        tb.addAction(a)
    tb.addSeparator()
    for a in w.view_acts:
        tb.addAction(a)
    tb.addSeparator()
    tb.addAction(w.undo_act)
    tb.addAction(w.redo_act)
    tb.addSeparator()
    tb.addAction(w.export_act)



def recent_catalogs(settings) -> list[str]:
    """The catalogs opened lately, newest first, as kept in ``settings`` (a QSettings)."""
    value = settings.value("recent", [])
    if not isinstance(value, (list, tuple)):  # one path, or garbage of another type
        value = [value]
    return [str(v) for v in (value or []) if v]


def remember_catalog(settings, path: str, limit: int) -> None:
    """Put ``path`` first in the recent catalogs (at most ``limit``) and as the last one opened."""
    recent = [path] + [p for p in recent_catalogs(settings) if p != path]
    settings.setValue("recent", recent[:limit])
    settings.setValue("last_catalog", path)


def fill_recent(menu, recent: list[str], open_catalog) -> None:
    """File ▸ Open recent: one entry per catalog, greyed out when there is none."""
    menu.clear()
    for path in recent:
        menu.addAction(path, lambda p=path: open_catalog(p))
    menu.setEnabled(bool(recent))

def show_device(w: QMainWindow) -> None:
    """Model ▸ Device…: where inference runs."""
    s = w.session
    text = (f"Inference runs on: <b>{s.device}</b>" if s and s.device else "No model loaded yet.")
    QMessageBox.information(w, "Device", f"{text}<br><br>flukeid uses the GPU (CUDA) when "
                            "onnxruntime finds a working one, and the CPU otherwise. Training "
                            "runs in its own process (Model ▸ Retrain…).")


def open_user_guide(w: QMainWindow) -> None:
    """Help ▸ User guide: docs/USER_GUIDE.md, or a short version when it is not installed."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "USER_GUIDE.md"
    if guide.is_file():
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(guide)))
    else:
        QMessageBox.information(w, "User guide", GUIDE)


def about(w: QMainWindow) -> None:
    QMessageBox.about(w, "About flukeid",
                      f"<h3>flukeid {__version__}</h3><p>Photo-identification of humpback whales "
                      "from their tail flukes, with a Siamese network.</p>")


GUIDE = """1. File ▸ Import photos…: the detector draws a box around each fluke.
2. Box review: Enter accepts the box, drag its corners or draw a new one, J = no fluke, S = skip.
3. Match review: compare the photo with the five most likely individuals.
   1-5 confirm, R rejects the shown candidate, N declares a new individual, S skips,
   H shows the heatmap, E the evidence lines, Up/Down compare another candidate.
4. Edit ▸ Undo (Ctrl+Z) reverses any decision; nothing is ever deleted from the history.
5. File ▸ Export… writes identifications, Kaggle-style labels or a sightings table."""


def keys(standard: QKeySequence.StandardKey, *extra: str) -> list[QKeySequence]:
    """The platform's bindings of ``standard`` and the ``extra`` keys, each once (a key bound
    twice to one action is ambiguous to Qt and triggers nothing)."""
    out: list[QKeySequence] = []
    for k in [*QKeySequence.keyBindings(standard), *(QKeySequence(e) for e in extra)]:
        if not k.isEmpty() and k not in out:
            out.append(k)
    return out
