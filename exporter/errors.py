"""The one exception type the exporter raises for anything a user can fix."""

from __future__ import annotations


class BucketrtError(Exception):
    """A problem with the request rather than a bug: an unsupported model, a bad option, a missing file.

    `message` says what is wrong in one sentence; `hint` (optional) says what to do instead. The CLI
    prints both on one line and exits with status 2, without a traceback.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f"; {self.hint.rstrip('.')}"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()
