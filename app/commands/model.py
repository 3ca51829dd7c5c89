"""``flukeid model add|list|activate``: the catalog's model versions from the command line."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="add a model bundle to a catalog, list its models, switch the active one",
        description="A catalog's model versions: each lives in CATALOG/models/<version>/ and one is active.",
    )
    models = p.add_subparsers(dest="model_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _help(p))

    a = models.add_parser(
        "add",
        help="check a model bundle folder and copy it into the catalog",
        description=(
            "Check a model bundle folder (checksums, both networks load, a test photo runs through them), "
            "copy it into CATALOG/models/<version>/ and register it. A damaged bundle is refused with the "
            "file named and the active model stays as it was; a version the catalog already has is never "
            "overwritten."
        ),
    )
    a.add_argument("catalog", metavar="CATALOG", help="the catalog folder")
    a.add_argument("bundle", metavar="BUNDLE", help="the model bundle folder (manifest.json, branch.onnx, head.onnx)")
    a.add_argument("--activate", action="store_true",
                   help="make it the active model (the catalog's photos are embedded with it first)")
    a.add_argument("--embed", action="store_true",
                   help="embed the catalog's photos with it now, without activating it")
    a.set_defaults(func=_add)

    ls = models.add_parser("list", help="the catalog's models, their metrics and which is active")
    ls.add_argument("catalog", metavar="CATALOG", help="the catalog folder")
    ls.set_defaults(func=_list)

    act = models.add_parser(
        "activate", help="switch the catalog's active model",
        description="Embed the catalog's photos with the model (the current one stays active meanwhile), "
                    "then make it the active model.")
    act.add_argument("catalog", metavar="CATALOG", help="the catalog folder")
    act.add_argument("version", metavar="VERSION", help="a version listed by `flukeid model list`")
    act.set_defaults(func=_activate)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _bar():
    from app.commands.catalog import _Bar

    return _Bar()


def _print_errors(errors) -> None:
    for path, problem in errors:
        print(f"error: {path}: {problem} (not embedded)", file=sys.stderr)


def _add(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import models

    with Catalog.open(args.catalog) as cat:
        result = models.add_bundle(cat, args.bundle, activate=args.activate, embed=args.embed, progress=_bar())
        _print_errors(result.errors)
        print(f"{'added' if result.copied else 'already in the catalog:'} model {result.version} ({result.path})")
        if args.activate or args.embed:
            print(f"{result.embedded} photos embedded with it")
        if result.active:
            print(f"active model: {result.version}")
        elif cat.active_model() is None:
            print(f"the catalog has no active model: make this one active with "
                  f"`flukeid model activate {args.catalog} {result.version}`")
    return 0


def _list(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import models

    with Catalog.open(args.catalog, mode="auto") as cat:
        versions = models.list_model_versions(cat)
    if not versions:
        print(f"no models in {args.catalog}: add one with `flukeid model add {args.catalog} BUNDLE`")
        return 0

    def pct(v) -> str:
        return "-" if v is None else f"{float(v):.1%}"

    rows = [("", "version", "created", "top-1", "top-5", "MAP@5", "status")]
    for v in versions:
        m = v.metrics or {}
        rows.append(("*" if v.active else "", v.version, (v.created or "-")[:16].replace("T", " "),
                     pct(m.get("top1")), pct(m.get("top5")), pct(m.get("map5")), v.problem or "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print("(* = active)")
    return 0


def _activate(args: argparse.Namespace) -> int:
    from app.catalog import Catalog
    from app.services import models

    with Catalog.open(args.catalog) as cat:
        report = models.activate(cat, args.version, progress=_bar())
        _print_errors(report.get("errors", []))
    print(f"active model: {args.version}")
    return 0
