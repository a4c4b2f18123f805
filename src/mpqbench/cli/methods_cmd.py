"""``mpqbench methods [NAME]``: the registered methods and every config field they take."""

from __future__ import annotations

import argparse
import dataclasses

from mpqbench.method import Budget, available_methods, get_method
from mpqbench.method.describe import FieldDoc, config_fields


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``methods`` subcommand."""
    p = subparsers.add_parser(
        "methods", help="list the methods and their config fields (type, default, help)",
        description="Without NAME: every registered method with one line of description. "
                    "With NAME: that method's config fields -- what a suite's params and "
                    "'quantize --set' take, nested ones dotted (train.lr) -- with type, "
                    "default and help, then the budget every method shares.",
    )
    p.add_argument("name", nargs="?", help="a method name (see the list without it)")
    p.set_defaults(func=run)


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def _default_text(value: object) -> str:
    return "(required)" if value is dataclasses.MISSING else repr(value)


def _table(rows: list[FieldDoc]) -> list[str]:
    width = max(len(r.name) for r in rows)
    twidth = max(len(r.type) for r in rows)
    dwidth = max(len(_default_text(r.default)) for r in rows)
    return [f"  {r.name:<{width}}  {r.type:<{twidth}}  {_default_text(r.default):<{dwidth}}  "
            f"{r.help}".rstrip() for r in rows]


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        names = available_methods()
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {_summary(get_method(name).config_cls)}")
        print("\n'mpqbench methods NAME' lists a method's config fields.")
        return 0
    entry = get_method(args.name)  # ValueError names the known methods
    print(f"{args.name}: {_summary(entry.config_cls)}\n")
    print("config fields (suite params / quantize --set KEY=VALUE):")
    print("\n".join(_table(config_fields(entry.config_cls))))
    print("\nbudget (the same for every method in a suite):")
    print("\n".join(_table(config_fields(Budget))))
    return 0
