"""Where the shared recordings live, and a clear error when they are not there.

The data folder sits beside the checkout (``../shared/data``) on developer machines and CI; a
user's machine will not have it, so every command that needs it must say so plainly.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "EARSHOT_DATA"


class DataMissingError(FileNotFoundError):
    """The shared data folder (or a file in it) is not there."""


def data_root() -> Path:
    """``$EARSHOT_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def require_data(*relative: str) -> Path:
    """Return ``data_root()/relative`` or raise a ``DataMissingError`` that says what to do."""
    path = data_root().joinpath(*relative)
    if not path.exists():
        raise DataMissingError(
            f"needed data not found: {path}\n"
            f"This command reads the shared recordings (LibriSpeech, sounds, faces) from "
            f"../shared/data beside the repository, or from ${DATA_ENV_VAR}. Point "
            f"{DATA_ENV_VAR} at a copy of that folder."
        )
    return path


def data_available() -> bool:
    return (data_root() / "speech").is_dir()
