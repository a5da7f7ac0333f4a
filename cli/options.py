"""Click options that several commands share, defined once."""

from __future__ import annotations

from pathlib import Path

import click

plugins_option = click.option(
    "--plugins",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="bucketrt's TensorRT plugin library. Default: the one built with bucketrt (bucketrt ops --trt-library).",
)

verbose_option = click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show TensorRT's and Polygraphy's info messages (their warnings and errors always show).",
)
