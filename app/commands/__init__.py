"""Command-line sub-commands: one module per command (or group), each with ``register(subparsers)``.

A module's ``register`` adds its parser(s) and sets ``func`` to a handler ``(args) -> int``.
Handlers import heavy modules (torch, Qt) inside, so ``flukeid --help`` stays fast.
"""
