"""Small dialogs: merge confirmation, relink moved photos, export choices, a labelled catalog to
import, and the words for a catalog that cannot be opened."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from app.services.viewdata import IndividualRow


def merge_summary(source: IndividualRow, target: IndividualRow) -> str:
    """What a merge of ``source`` into ``target`` will change, in words."""
    total = source.photo_count + target.photo_count
    first = min(filter(None, [source.first_seen, target.first_seen]), default=None)
    last = max(filter(None, [source.last_seen, target.last_seen]), default=None)
    span = f"<br>Sightings will span {first} to {last}." if first and last else ""
    return (f"<p>All <b>{source.photo_count}</b> photo{'s' if source.photo_count != 1 else ''} of "
            f"<b>{html.escape(source.label)}</b> will be identified as <b>{html.escape(target.label)}</b>, "
            f"which will then have <b>{total}</b> photos.{span}</p>"
            f"<p><b>{html.escape(source.code)}</b> will no longer appear in the individuals list. "
            "The merge is recorded in the catalog's history and can be undone (Edit ▸ Undo).</p>")


def confirm_merge(parent: QWidget | None, source: IndividualRow, target: IndividualRow) -> bool:
    """Ask before merging; the message says exactly what will change."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Merge individuals")
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(f"Merge {source.label} into {target.label}?")
    box.setInformativeText(merge_summary(source, target))
    ok = box.addButton("Merge", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is ok


class MergeDialog(QDialog):
    """Choose the individual to merge into."""

    def __init__(self, source: IndividualRow, others: list[IndividualRow], parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Merge {source.label}")
        self.combo = QComboBox()
        for row in others:
            self.combo.addItem(f"{row.label}  ({row.photo_count} photos)", row.individual_id)
        form = QFormLayout(self)
        form.addRow(QLabel(f"Merge <b>{html.escape(source.label)}</b> into:"))
        form.addRow("Individual", self.combo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def target_id(self) -> int | None:
        return self.combo.currentData()


def ask_relink(parent: QWidget | None, missing: int, total: int, example: str) -> str | None:
    """Photos were moved: offer to find them in a folder. Returns the chosen folder or None."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Photos not found")
    box.setText(f"{missing} of {total} photos of this catalog are not where they were imported from.")
    box.setInformativeText(
        f"For example: {example}\n\nIf you moved or renamed the photo folder (or it is on a drive "
        "that is not connected), choose the folder where the photos are now. They are found again "
        "by their content, so names and sub-folders may differ.")
    relink = box.addButton("Relink photos…", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
    box.exec()
    if box.clickedButton() is not relink:
        return None
    folder = QFileDialog.getExistingDirectory(parent, "Folder where the photos are now")
    return folder or None


class ExportDialog(QDialog):
    """Choose an export format and file."""

    FORMATS = [
        ("identifications", "Identifications (CSV: photo, individual, date, position, box, decision…)"),
        ("kaggle", "Kaggle-style Image,Id (CSV)"),
        ("sightings", "Sightings table: individual by date (CSV, capture-recapture)"),
    ]

    def __init__(self, parent=None, default_dir: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.format = QComboBox()
        for key, label in self.FORMATS:
            self.format.addItem(label, key)
        self.path = QLineEdit(default_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        form = QFormLayout(self)
        form.addRow("Format", self.format)
        form.addRow("File", self.path)
        form.addRow("", browse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text(), "CSV files (*.csv)")
        if path:
            self.path.setText(path)

    def choice(self) -> tuple[str, str]:
        return self.format.currentData(), self.path.text().strip()


def ask_labelled_catalog(parent: QWidget | None) -> tuple[str, str] | None:
    """File ▸ Import labelled catalog: the CSV, then the folder of its photos (None: cancelled)."""
    csv, _ = QFileDialog.getOpenFileName(parent, "Labelled catalog (labels.csv or Kaggle train.csv)", "",
                                         "CSV files (*.csv)")
    if not csv:
        return None
    images = QFileDialog.getExistingDirectory(parent, "Folder holding the photos named in the CSV",
                                              str(Path(csv).parent))
    return (csv, images) if images else None


def open_error_text(exc: BaseException) -> tuple[str, str]:
    """(title, what to do) for a catalog that could not be opened, told apart by its error class."""
    from app.catalog import CatalogLockedError, CatalogTooNewError

    if isinstance(exc, CatalogTooNewError):
        return ("Catalog from a newer flukeid",
                "This catalog was saved by a newer version of flukeid. Nothing was changed. "
                "Install the newer version to open it, or open another catalog.")
    if isinstance(exc, CatalogLockedError):
        return ("Catalog in use", "Another flukeid has this catalog open for writing. "
                "Close it there, or open the catalog read-only.")
    return "Cannot open the catalog", "Nothing was changed."
