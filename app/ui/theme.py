"""The look: Fusion with a dark palette (photos read best on dark grey) and a few named styles."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

STYLE = """
QWidget { font-size: 10pt; }
QLabel#viewTitle { font-size: 13pt; color: #eef2f5; padding: 2px 0; }
QLabel#sectionTitle { font-size: 11pt; font-weight: bold; color: #cfd8e0; padding: 2px 0 4px 0; }
QLabel#hint { color: #9aa6b2; }
QLabel#caption { color: #cfd8e0; font-weight: bold; padding: 2px; }
QLabel#emptyMessage { color: #9aa6b2; font-size: 14pt; }
QLabel#banner { border-radius: 6px; padding: 8px 12px; font-size: 11pt; }
QLabel#banner[kind="match"] { background: #1f3a2b; color: #d6f5e1; border: 1px solid #3fae6a; }
QLabel#banner[kind="close"] { background: #2c2a3f; color: #e4defa; border: 1px solid #8a7ad9; }
QLabel#banner[kind="new"] { background: #3d2f14; color: #fbe7c0; border: 1px solid #e8a33d; }
QFrame#card { background: #232930; border: 1px solid #363e47; border-radius: 8px; }
QFrame#card:hover { border-color: #5b6875; }
QFrame#card[selected="true"] { background: #1d2f44; border: 2px solid #4a90d9; }
QFrame#card[rejected="true"] { background: #2a2124; border: 1px dashed #7a4a52; }
QLabel#cardKey { background: #3a4450; color: white; border-radius: 13px; font-weight: bold; }
QLabel#cardName { font-weight: bold; font-size: 11pt; color: #eef2f5; }
QLabel#cardDetails { color: #9aa6b2; }
QLabel#cardScore { font-size: 18pt; font-weight: bold; min-width: 62px; }
QLabel#cardThumb { background: #15191d; border-radius: 4px; color: #6b7782; }
QProgressBar { background: #15191d; border: none; border-radius: 3px; }
QPushButton { padding: 6px 14px; border-radius: 5px; background: #323a43; border: 1px solid #46505b; }
QPushButton:hover { background: #3b4550; }
QPushButton:disabled { color: #6b7782; }
QPushButton#primary { background: #2f6db5; border-color: #4a90d9; color: white; font-weight: bold; }
QPushButton#primary:hover { background: #3a7dc9; }
QFrame#notification { border-radius: 6px; padding: 2px; }
QFrame#notification[kind="error"] { background: #4a2226; border: 1px solid #c0505c; }
QFrame#notification[kind="info"] { background: #1d2f44; border: 1px solid #4a90d9; }
QFrame#notification[kind="warning"] { background: #3d2f14; border: 1px solid #e8a33d; }
QTabBar::tab { padding: 7px 16px; }
QStatusBar QLabel { padding: 0 8px; color: #cfd8e0; }
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style, dark palette, the named styles above."""
    app.setStyle("Fusion")
    pal = QPalette()
    base, window, text = QColor("#1b2026"), QColor("#22282f"), QColor("#e3e8ed")
    for role, colour in (
        (QPalette.ColorRole.Window, window), (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, QColor("#262d35")),
        (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, QColor("#2c333b")),
        (QPalette.ColorRole.ButtonText, text), (QPalette.ColorRole.Highlight, QColor("#2f6db5")),
        (QPalette.ColorRole.HighlightedText, QColor("white")), (QPalette.ColorRole.ToolTipBase, QColor("#2c333b")),
        (QPalette.ColorRole.ToolTipText, text), (QPalette.ColorRole.PlaceholderText, QColor("#7d8894")),
        (QPalette.ColorRole.Link, QColor("#6aaaf0")),
    ):
        pal.setColor(role, colour)
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#6b7782"))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#6b7782"))
    app.setPalette(pal)
    app.setStyleSheet(STYLE)
