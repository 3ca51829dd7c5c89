"""The window's message strip: a dismissable line above the views, with an optional action button."""

from __future__ import annotations

import html
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton


class NotificationBar(QFrame):
    """A dismissable message strip above the views (errors stay until closed)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("notification")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_btn = QPushButton()
        self.action_btn.setVisible(False)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 4, 4, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.action_btn)
        lay.addWidget(close)
        self._action: Callable[[], None] | None = None
        self.action_btn.clicked.connect(self._run_action)
        self.hide()

    def show_message(self, text: str, kind: str = "info", action: tuple[str, Callable] | None = None) -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self._action = action[1] if action else None
        self.action_btn.setVisible(action is not None)
        if action:
            self.action_btn.setText(action[0])
        self.show()

    def _run_action(self) -> None:
        if self._action:
            self._action()


def plain(exc: BaseException | str) -> str:
    """An error (or a message) as text safe to show in the bar's rich text."""
    text = str(exc) or type(exc).__name__
    return html.escape(text, quote=False)
