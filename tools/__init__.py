"""Builders of the model files shipped in resources/ (``python -m tools.NAME``, or the Makefile targets).

Not part of the installed program: they train on synthetic data only and write under resources/.
"""
