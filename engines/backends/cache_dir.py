"""Where built engines and exported test models are cached, and the key that keeps them honest.

Compiled engines (TensorRT plans, ORT's TensorRT-EP engines) are valid only for the exact ONNX bytes,
runtime version and GPU they were built for; loading one built elsewhere either fails late or,
worse, runs wrong. So each lives in a folder/file named by a digest of everything it depends on,
and anything whose key differs is simply never found, hence rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping


def default_cache_dir() -> Path:
    """``$EARSHOT_CACHE_DIR``, else the XDG cache (``~/.cache/earshot/engines``)."""
    if env := os.environ.get("EARSHOT_CACHE_DIR"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "earshot" / "engines"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(fields: Mapping[str, object], length: int = 20) -> str:
    """A short stable digest of a flat mapping (order-independent)."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
