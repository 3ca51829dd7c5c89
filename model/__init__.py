"""flukeid's model package: Siamese training (torch, imported lazily) and torch-free inference.

The app reaches this package only through :mod:`model.api`.
"""
