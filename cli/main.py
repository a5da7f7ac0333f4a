"""Entry point of the `bucketrt` console script: the group, with every command registered on it."""

from __future__ import annotations

from . import bench, build, check, export, ops, quantize, serve, triton  # noqa: F401  (each module registers its command on `main`)
from .app import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
