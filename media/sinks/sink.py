"""The sink interface: one output of a rendered stream (a file, a window, a browser, speakers).

Every output of the renderer is one small :class:`Sink`, so the renderer only composes the
ones its config asks for and hands each the same drawn frame and the same audio blocks.
Sinks take plain arrays and times on the files' timeline (:mod:`media.timeline`); they know
nothing of messages or nodes.

A sink's life is ``open()`` → any number of ``video()`` / ``audio()`` / ``faces()`` →
``close()``. ``open()`` returns False when the output cannot work on this machine (no
display, no sound card library): it has said why in the log, and the renderer goes on
without it. ``close()`` is idempotent and returns the files the sink wrote that exist.

Tracks are named as the files name them: ``"mixture"`` (the microphone) and
``"voice_<track id>"`` (one isolated voice per tracked face).

``stats()`` uses one vocabulary, so a run's summary can compare what was written with what
was received (``frames_received``, ``audio_s_received.<track>``: what :class:`Sinks` was given):
``frames_written`` and ``audio_s_written.<track>`` (seconds from the input, gap-filling
silence not counted) for files, ``frames_shown`` for views, ``audio_s_played`` for speakers.

:class:`VoiceChoice` is the one piece of state two sinks share: the faces a person chose in the
browser view (written by the web sink's server threads), whose voices the speaker and virtual
microphone sinks play (read at each audio block).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIXTURE = "mixture"


def voice_track(track_id: int) -> str:
    """The track name of face ``track_id``'s isolated voice (also its WAV's name)."""
    return f"voice_{int(track_id)}"


@dataclass
class DrawnFrame:
    """One frame as every sink receives it. ``image`` is shared: sinks must not draw on it."""

    image: np.ndarray                 # BGR uint8, H×W×3, overlays drawn
    time_s: float | None              # on the files' timeline; None: unstamped, follows the last at fps
    index: int = 0                    # the camera's frame number
    rows: list[dict[str, Any]] = field(default_factory=list)  # per-node stats, for views with a table
    # What was perceived in this frame, for sinks that record it (media.sinks.frame_record); only
    # what the renderer drew (fresh, see Renderer._fresh) is here, so a record says what the video shows.
    heatmap: np.ndarray | None = None  # the (H, W) map as received (no display gain), over the whole image
    faces: dict[int, list[float]] = field(default_factory=dict)  # track id → box [x0, y0, x1, y1], image pixels
    speaking: int | None = None       # the track the heatmap names as speaking (lip-sync); None: nobody/unknown
    speaking_score: float | None = None  # that track's lip-sync score


class VoiceChoice:
    """The faces whose voices the audio sinks play, chosen live; none chosen: the sinks' own rule
    (``play_track``, or the loudest voice), described by ``default`` for people.

    Why an object shared by sinks, and not a call through :class:`Sinks`: the choice is made on the
    web view's server threads (a click), at any time, and must reach the audio sinks at their next
    block, with no message and no node in between (sinks know nothing of either). The renderer makes
    one and hands it to the sinks that write it (web) and read it (speaker, virtual microphone).
    Readers take :attr:`tracks` (an immutable set, replaced whole, so a read never sees half a
    change); writers change it under a lock."""

    def __init__(self, default: str = "the loudest voice") -> None:
        self.default = default
        self.tracks: frozenset[int] = frozenset()  # chosen track ids; empty: the default
        self.changes = 0
        self._lock = threading.Lock()

    def clicked(self, track_id: int | None, add: bool = False) -> frozenset[int]:
        """The browser view's rule: a click on a face plays that face alone, a click on the only
        face playing (or beside every face) goes back to the default; with ``add`` (shift-click)
        the face joins the voices playing, or leaves them if it was one."""
        with self._lock:
            if track_id is None:
                chosen = frozenset()
            elif add:
                chosen = self.tracks ^ {int(track_id)}
            else:
                chosen = frozenset() if self.tracks == {int(track_id)} else frozenset({int(track_id)})
            return self._set(chosen)

    def _set(self, chosen: frozenset[int]) -> frozenset[int]:
        if chosen != self.tracks:
            self.tracks, self.changes = chosen, self.changes + 1
        return chosen

    def label(self) -> str:
        tracks = self.tracks
        return " + ".join(f"face {i}" for i in sorted(tracks)) if tracks else f"{self.default} (default)"

    def stats(self) -> dict[str, int]:
        """For the renderer's heartbeat: ``faces`` chosen (0: the default plays), ``track`` (the
        chosen one; the lowest of several; -1: none), ``changes`` so far."""
        tracks = self.tracks
        return {"faces": len(tracks), "track": min(tracks, default=-1), "changes": self.changes}


class Sink:
    """One output. Subclasses override what they use; the defaults do nothing."""

    name = "sink"
    #: where a person can watch it live (the browser view's address), reported with the files
    url: str | None = None

    def open(self) -> bool:
        return True

    def video(self, frame: DrawnFrame) -> None:
        """A drawn frame."""

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        """One block of mono float32 per track, all starting at ``first_sample`` on the timeline."""

    def faces(self, time_s: float | None, track_ids: Sequence[int], boxes_xyxy: np.ndarray,
              frame_size: tuple[int, int]) -> None:
        """Face boxes (pixels of a ``frame_size`` = (width, height) frame) seen at ``time_s``."""

    def close(self) -> list[Path]:
        return []

    def stats(self) -> dict[str, float]:
        return {}


class Sinks(Sink):
    """Several sinks as one: each call goes to every open sink in turn. Its stats are what it
    was given (``frames_received``, ``audio_s_received.<track>``) and every sink's own, prefixed
    by the sink's name (``mp4.frames_written``, ``wav.audio_s_written.voice_7``)."""

    name = "sinks"

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.members: dict[str, Sink] = {}
        self.frames_received = 0
        self.samples_received: dict[str, int] = {}

    def add(self, sink: Sink | None) -> bool:
        """Open ``sink`` and keep it if it works here (a sink that cannot has said why)."""
        if sink is None or not sink.open():
            return False
        self.members[sink.name] = sink
        return True

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def __getitem__(self, name: str) -> Sink:
        return self.members[name]

    def urls(self) -> list[str]:
        return [sink.url for sink in self.members.values() if sink.url]

    def video(self, frame: DrawnFrame) -> None:
        self.frames_received += 1
        for sink in self.members.values():
            sink.video(frame)

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        for track, samples in tracks.items():
            self.samples_received[track] = self.samples_received.get(track, 0) + samples.size
        for sink in self.members.values():
            sink.audio(tracks, first_sample)

    def faces(self, time_s: float | None, track_ids: Sequence[int], boxes_xyxy: np.ndarray,
              frame_size: tuple[int, int]) -> None:
        for sink in self.members.values():
            sink.faces(time_s, track_ids, boxes_xyxy, frame_size)

    def close(self) -> list[Path]:
        """Close every sink, even when one fails (the first failure is raised after)."""
        written: list[Path] = []
        failure: Exception | None = None
        for sink in self.members.values():
            try:
                written.extend(sink.close())
            except Exception as exc:  # noqa: BLE001 - the other files must still be finished
                failure = failure or exc
        if failure is not None:
            raise failure
        return written

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"frames_received": self.frames_received}
        out.update({f"audio_s_received.{track}": seconds(n, self.sample_rate_hz)
                    for track, n in self.samples_received.items()})
        out.update({f"{name}.{key}": value for name, sink in self.members.items()
                    for key, value in sink.stats().items()})
        return out

    def summary(self) -> str:
        """Frames and seconds of audio written of what arrived, for the run's closing report:
        a user must be able to tell a complete recording from one that lost half its input."""
        stats = self.stats()
        parts = [f"wrote {stats['mp4.frames_written']} of {self.frames_received} frames received"] \
            if "mp4.frames_written" in stats else []
        for track, n in sorted(self.samples_received.items()):
            written = max(stats.get(f"mp4.audio_s_written.{track}", 0), stats.get(f"wav.audio_s_written.{track}", 0))
            parts.append(f"{track} {written:.1f} s of {seconds(n, self.sample_rate_hz):.1f} s")
        return "; ".join(parts)


def seconds(samples: int, sample_rate_hz: int) -> float:
    return round(samples / sample_rate_hz, 3)


def json_lines(path: Path) -> list[dict]:
    """The JSON lines of a file a sink appends to as it goes (a journal, a part's timing); a last line cut
    by a kill is left out, a missing file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
