"""TensorRT plan files on disk: the key they are stored under, and refusing any that do not match.

A serialized TensorRT engine ("plan") is only valid for the TensorRT version, GPU architecture
and (on Jetson) L4T release that built it, and only for the ONNX bytes and build options it was
built from. TensorRT may reject a foreign plan, or may not, so we never hand it one: each plan is
written with a header recording its full key and its own SHA-256, and a read returns the plan only
if the file's magic, key and checksum all match. Anything else (stale, foreign, truncated, a bare
``trtexec`` plan copied in) reads as a miss and the caller rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engines.backends.cache_dir import digest

log = logging.getLogger(__name__)

MAGIC = b"EARSHOT-TRT-PLAN\x01"
_HEADER_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class PlanKey:
    """Everything a built plan depends on; two builds with equal keys are interchangeable."""

    onnx_sha256: str
    tensorrt_version: str
    cuda_version: str
    compute_capability: str
    gpu_name: str
    l4t_release: str | None
    #: precision, profiles, workspace: see `tensorrt_build.BuildOptions.key_fields`
    build: dict = field(default_factory=dict)

    def digest(self) -> str:
        return digest(dataclasses.asdict(self))

    def timing_cache_name(self) -> str:
        """Timing caches are shared by every model on one TensorRT + GPU, not per ONNX."""
        return "timing-" + digest(
            {"tensorrt": self.tensorrt_version, "cc": self.compute_capability, "gpu": self.gpu_name,
             "l4t": self.l4t_release}, 16
        ) + ".cache"


class PlanStore:
    """A folder of plans, one file per (model, key)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, model: str, key: PlanKey) -> Path:
        return self.root / f"{model}-{key.digest()}.plan"

    def read(self, model: str, key: PlanKey) -> bytes | None:
        """The stored plan if it was built for exactly ``key`` and is intact, else None."""
        path = self.path(model, key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        reason = _check(blob, key)
        if reason:
            log.warning("ignoring TensorRT plan %s: %s; it will be rebuilt", path, reason)
            return None
        (length,) = _HEADER_LEN.unpack_from(blob, len(MAGIC))
        return blob[len(MAGIC) + _HEADER_LEN.size + length:]

    def write(self, model: str, key: PlanKey, plan: bytes) -> Path:
        header = json.dumps({"key": dataclasses.asdict(key), "plan_sha256": hashlib.sha256(plan).hexdigest()},
                            sort_keys=True).encode()
        path = self.path(model, key)
        _atomic_write(path, MAGIC + _HEADER_LEN.pack(len(header)) + header + plan)
        return path

    def read_timing_cache(self, key: PlanKey) -> bytes:
        try:
            return (self.root / key.timing_cache_name()).read_bytes()
        except FileNotFoundError:
            return b""

    def write_timing_cache(self, key: PlanKey, data: bytes) -> None:
        _atomic_write(self.root / key.timing_cache_name(), data)


def _check(blob: bytes, key: PlanKey) -> str | None:
    """Why ``blob`` is not a usable plan for ``key`` (None when it is)."""
    if not blob.startswith(MAGIC):
        return "not written by Earshot (no header)"
    try:
        (length,) = _HEADER_LEN.unpack_from(blob, len(MAGIC))
        start = len(MAGIC) + _HEADER_LEN.size
        header = json.loads(blob[start:start + length])
    except (struct.error, ValueError) as exc:
        return f"unreadable header ({exc})"
    if header.get("key") != json.loads(json.dumps(dataclasses.asdict(key))):
        return "built for another model, TensorRT, CUDA or GPU"
    plan = blob[start + length:]
    if hashlib.sha256(plan).hexdigest() != header.get("plan_sha256"):
        return "checksum mismatch (truncated or corrupt)"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a crash mid-build never leaves a half plan under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
