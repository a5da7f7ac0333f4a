"""The `bucketrt` command group. Command modules import `main` from here and register on it."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from bucketrt.errors import EXIT_FAILED, EXIT_USAGE, BucketrtError

# Exit statuses: 0 success, 1 a check that ran and failed (or a model a backend could not build or
# run), 2 a usage problem (as click uses it); both from bucketrt.errors.
EXIT_INTERNAL = 3  # an unexpected exception: a bucketrt bug
TRACEBACK_ENV = "BUCKETRT_TRACEBACK"


def console() -> Console:
    """Rich console on stdout; stderr carries only error lines.

    Pipes and logs get 120 columns (rich's default of 80 folds the comparison tables).
    """
    out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = max(out.width, 120)
    return out


def fail(message: str, code: int = EXIT_USAGE):
    """Prints one line on stderr and exits: the only way commands report user errors."""
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def fail_lines(lines: list[str], code: int = EXIT_FAILED):
    """Several problems (e.g. TensorRT's parser errors): one "Error:" line each on stderr, then exits."""
    for line in lines:
        click.echo(f"Error: {' '.join(str(line).split())}", err=True)
    sys.exit(code)


class BucketrtGroup(click.Group):
    """Turns a BucketrtError (a missing op library included) into one line on stderr and its exit
    status (2 for usage problems), and any other exception (a bug) into one line and exit status 3."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BucketrtError as e:
            fail(e.one_line(), e.exit_status)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug of ours: still one line, the traceback on request
            if os.environ.get(TRACEBACK_ENV):
                raise
            fail(
                f"internal error: {type(e).__name__}: {e} (set {TRACEBACK_ENV}=1 for the traceback, and please "
                "report it)",
                EXIT_INTERNAL,
            )


@click.group(cls=BucketrtGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bucketrt", prog_name="bucketrt")
def main():
    """Export data-dependent-attention and mixture-of-experts transformers (YOSO, Reformer, Switch,
    LSG) to ONNX with bucketrt's custom ops, check them in ONNX Runtime, and build and check
    TensorRT engines with bucketrt's plugins."""
