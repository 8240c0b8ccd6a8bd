"""Project error types: each names the file (or setting) at fault and how to fix it.

All are ValueError subclasses, so callers that only know "bad input" can catch
ValueError; the CLI catches ``OidoError`` and prints the message without a traceback.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class OidoError(ValueError):
    """Base of the project's user-facing errors.

    `path` is the file the message is about (None when it is about a setting).
    """

    def __init__(self, message: str, *, path: Optional[PathLike] = None) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class AudioError(OidoError):
    """An audio file cannot be read or holds no usable audio."""


class ModelError(OidoError):
    """A .tflite model cannot be loaded or does not have the tensors we need."""


class ManifestError(OidoError):
    """model/manifest.json is missing, malformed or disagrees with the model files."""


class ConfigError(OidoError):
    """A setting (config file, command line, DetectorConfig field) is invalid."""


def listed(header: str, errors: Iterable[object], *, limit: Optional[int] = None) -> str:
    """One message for several bad inputs: `header:` then each error on its own indented line
    (the first `limit`, then how many more), so one pass fixes them all."""
    lines = [str(error) for error in errors]
    shown = lines if limit is None else lines[:limit]
    more = [f"... and {len(lines) - len(shown)} more"] if len(lines) > len(shown) else []
    return "\n  ".join([f"{header}:", *shown, *more])
