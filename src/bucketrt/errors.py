"""Every error bucketrt raises on purpose, in one hierarchy rooted at `BucketrtError`.

A `BucketrtError` is a problem with the request rather than a bug: an unsupported model, a bad
option, a missing file or library. `message` says what is wrong in one sentence, `hint` (optional)
what to do instead; `exit_status` is what the CLI exits with after printing both on one line,
without a traceback: 2 for a usage problem (as click uses it), 1 for a model that a backend could
not build or run. Anything else that escapes is a bug (the CLI exits 3).

Subclasses that used to be ValueError or RuntimeError still are, so that callers catching those
keep working.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class BucketrtError(Exception):
    """A problem with the request rather than a bug (see the module doc)."""

    exit_status = EXIT_USAGE

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


# -- the op libraries ----------------------------------------------------------------------------


class LibraryNotBuiltError(BucketrtError, RuntimeError):
    """bucketrt's ONNX Runtime op library is not where it should be (not compiled, or a wrong
    $BUCKETRT_LIBRARY)."""


class TrtLibraryNotBuiltError(LibraryNotBuiltError):
    """bucketrt was built without its TensorRT plugin library."""


class CudaOpError(BucketrtError, RuntimeError):
    """A CUDA op call the kernels rejected (bad input) or that failed (bucketrt.library.cuda)."""


# -- configurations and shapes ---------------------------------------------------------------------


class LSGConfigError(BucketrtError, ValueError):
    """An LSG config bucketrt cannot run; the message says which field and why."""


class ProfileError(BucketrtError, ValueError):
    """A shape option that cannot make a TensorRT profile; the message names the option, input and dim."""


# -- backends that could not build or run a model ----------------------------------------------------


class BackendRunError(BucketrtError, RuntimeError):
    """The backend could not load or run a model (the export's or the backend's fault, not the user's);
    the message carries the backend's own words, as they are."""

    exit_status = EXIT_FAILED

    def one_line(self) -> str:
        return " ".join(self.message.split())


class BuildError(BucketrtError, RuntimeError):
    """TensorRT could not parse or build a model: `lines` say why, one problem per line."""

    exit_status = EXIT_FAILED

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines

    def one_line(self) -> str:
        return self.message  # TensorRT's words, as they are


class ServerError(BucketrtError):
    """tritonserver is missing, did not start, or stopped on its own."""


__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "BackendRunError",
    "BucketrtError",
    "BuildError",
    "CudaOpError",
    "LSGConfigError",
    "LibraryNotBuiltError",
    "ProfileError",
    "ServerError",
    "TrtLibraryNotBuiltError",
]
