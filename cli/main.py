"""Entry point of the `bucketrt` console script.

Every command lives in its own module of this package. A module either registers on the group
itself (`from .app import main` then `@main.command(...)`) or defines a plain `@click.command`,
which is added here. A listed module that does not exist is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from .app import main

COMMAND_MODULES = ("export", "check", "ops", "bench")


def _register(module) -> None:
    registered = list(main.commands.values())
    for value in vars(module).values():
        if isinstance(value, click.Command) and not isinstance(value, click.Group) and value not in registered:
            main.add_command(value)


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"{__package__}.{_name}") is not None:
        _register(importlib.import_module(f"{__package__}.{_name}"))

__all__ = ["main"]

if __name__ == "__main__":
    main()
