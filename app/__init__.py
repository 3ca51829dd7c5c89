"""flukeid's application: catalog store, Qt-free services, command line and the PySide6 GUI."""

__version__ = "0.1.0"
