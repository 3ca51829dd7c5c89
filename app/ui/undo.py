"""Undo/redo: QUndoStack commands whose work is a decision service call.

The catalog keeps an append-only history: the first ``redo()`` records the decision, ``undo()``
appends a reversing action (:func:`app.services.decisions.undo`), a later ``redo()`` appends
:func:`app.services.decisions.redo`. Every catalog write goes through the window's single
writer thread, so the order of the stack and of the history is the same.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand

from app.services import decisions


class DecisionCommand(QUndoCommand):
    """One reviewer decision on the undo stack.

    Args:
        text: what Edit ▸ Undo shows ("Confirm HW-0003").
        do: ``do(catalog) -> Done``, the service call that records the decision.
        write: the window's writer: ``write(label, fn, after=None)`` runs ``fn(catalog)`` off the GUI
            thread, then ``after()`` in the GUI thread.
        on_undone: called once an undo of this command is recorded.
    """

    def __init__(self, text: str, do: Callable, write: Callable[..., None],
                 on_undone: Callable[[], None] | None = None):
        super().__init__(text)
        self._do = do
        self._write = write
        self._on_undone = on_undone  # e.g. bring the photo back to the match review
        self._done_once = False

    def redo(self) -> None:
        if not self._done_once:
            self._done_once = True
            self._write(self.text(), self._do)
        else:
            self._write(f"Redo: {self.text()}", lambda cat: decisions.redo(cat))

    def undo(self) -> None:
        self._write(f"Undo: {self.text()}", lambda cat: decisions.undo(cat), after=self._on_undone)
