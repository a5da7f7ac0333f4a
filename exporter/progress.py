"""Progress reporting for long exports, and silencing of the exporter's own chatter."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings


class Progress:
    """Silent: the default for the Python API."""

    @contextlib.contextmanager
    def stage(self, text: str):
        yield

    def done(self, text: str) -> None:
        pass


class RichProgress(Progress):
    """A spinner while a stage runs (on terminals), then one line per finished stage."""

    def __init__(self, console):
        self.console = console

    @contextlib.contextmanager
    def stage(self, text: str):
        start = time.perf_counter()
        with self.console.status(f"{text}…"):
            yield
        self.console.print(f"[green]✓[/] {text} [dim]({time.perf_counter() - start:.1f} s)[/]", highlight=False)

    def done(self, text: str) -> None:
        self.console.print(text, highlight=False)


@contextlib.contextmanager
def quiet_torch_export():
    """Mutes torch.onnx's warnings, log lines and prints; errors still raise."""
    loggers = [
        logging.getLogger(name)
        for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch._dynamo", "torch.fx")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
