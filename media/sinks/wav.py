"""The WAV sink: one WAV per isolated voice, and ``voices.json`` saying which face each is.

``voices.json`` (issue #16) maps each voice to its face's box track, so a user can tell
which WAV belongs to which face::

    {"sample_rate_hz": 16000, "frame_width": 640, "frame_height": 480,
     "columns": ["time_s", "x", "y", "w", "h"],
     "voices": {"7": {"wav": "voice_7.wav", "boxes": [[0.04, 120.0, 80.5, 96.0, 110.0], ...]}}}

``time_s`` is on the WAVs' own timeline (sample / sample_rate_hz: the same clock the voices
were placed by); boxes are in pixels of a frame_width × frame_height frame. A voice whose
face was never seen (the renderer's ``faces`` input unwired) has an empty box list.

A renderer restarted after a crash or a kill -9 goes on with the same files: each WAV is reopened and
appended to (what was written before the kill is in it; the time the renderer was down becomes
silence, and nothing more: the WAV already holds the run up to the kill), and ``voices.json`` still
lists every voice and box of the run. So the sink keeps a journal, ``.voices.jsonl`` in the folder:
the run's id (``EARSHOT_RUN_ID``, set by the node runner), each WAV it opened and each face box, a
line each, written as they come. A sink of the same run picks them up; another run starts anew.
The journal goes once ``voices.json`` is written.
"""

from __future__ import annotations

import json
import math
import logging
import os
import uuid
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, Sink, json_lines, seconds, voice_track
from media.writers import WavWriter  # (soundfile itself is imported only when a WAV is opened)

log = logging.getLogger("earshot.sinks.wav")

SIDECAR = "voices.json"
#: what the sink did so far in this run, for a restarted renderer to go on from
JOURNAL = ".voices.jsonl"
#: the run's id, set by the node runner (pipeline/runner.py): same id = a restart within the run
RUN_ID_ENV = "EARSHOT_RUN_ID"


class WavSink(Sink):
    """``<folder>/voice_<track id>.wav`` per voice (the mixture is not written) + the sidecar.

    ``run_id``: which run this sink writes for (default: ``$EARSHOT_RUN_ID``, else a new one, so a
    sink made outside a graph always starts its files anew)."""

    name = "wav"

    def __init__(self, folder: str | Path, sample_rate_hz: int, run_id: str | None = None) -> None:
        self.folder = Path(folder)
        self.sample_rate_hz = sample_rate_hz
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex
        self.wavs: dict[str, Any] = {}  # track → WavWriter
        # track → flat time_s, x, y, w, h, time_s, … (NaN: no time): 40 B a row, held for the whole run
        # (a list of lists cost ~210 B a row: 22 MiB an hour at 25 fps with two faces, benchmarks/soak.py)
        self.boxes: dict[str, array] = {}
        self.frame_size = (0, 0)
        self.closed = False
        self.journal: Any = None  # the open journal, once the sink was first used

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        self._start()
        for track, samples in tracks.items():
            if track == MIXTURE:
                continue
            if track not in self.wavs:
                self.wavs[track] = WavWriter(self.folder / f"{track}.wav", self.sample_rate_hz)
                self._note({"wav": track})
            self.wavs[track].write(samples, first_sample)

    def faces(self, time_s: float | None, track_ids: Sequence[int], boxes_xyxy: np.ndarray,
              frame_size: tuple[int, int]) -> None:
        self._start()
        self.frame_size = frame_size
        t = None if time_s is None else round(time_s, 3)
        rows = []
        for track_id, (x1, y1, x2, y2) in zip(track_ids, np.asarray(boxes_xyxy, np.float64).tolist()):
            row = [t, round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)]
            self._keep(voice_track(track_id), row)
            rows.append([voice_track(track_id), *row])
        self._note({"size": list(frame_size), "boxes": rows})

    def close(self) -> list[Path]:
        if self.closed:
            return []
        self._start()  # a restarted renderer that was given nothing still finishes its run's files
        self.closed = True
        for wav in self.wavs.values():
            wav.close()
            log.info("wrote %s", wav.path)
        sidecar = self.folder / SIDECAR
        self.folder.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(self.sidecar_json())
        self.journal.close()
        (self.folder / JOURNAL).unlink(missing_ok=True)  # the run's files are complete
        return [p for p in [*(w.path for w in self.wavs.values()), sidecar] if p.exists()]

    # -- going on after a restart ------------------------------------------------------------

    def _start(self) -> None:
        """On first use: go on from this run's journal (a restart), or start one (a new run)."""
        if self.journal is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOURNAL
        entries = json_lines(path)
        if entries and entries[0].get("run") == self.run_id:
            self._go_on(entries[1:])
            self.journal = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()
        else:
            self.journal = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._note({"run": self.run_id})

    def _go_on(self, entries: list[dict]) -> None:
        """Reopen the WAVs an earlier process of this run wrote (appending) and take back its boxes."""
        for entry in entries:
            if "wav" in entry and entry["wav"] not in self.wavs:
                track = entry["wav"]
                self.wavs[track] = _reopen(self.folder / f"{track}.wav", self.sample_rate_hz)
            elif "boxes" in entry:
                self.frame_size = tuple(entry["size"])
                for track, *row in entry["boxes"]:
                    self._keep(track, row)
        if self.wavs:
            log.info("restarted: going on with %s", ", ".join(f"{t}.wav" for t in sorted(self.wavs)))

    def _keep(self, track: str, row: list) -> None:
        self.boxes.setdefault(track, array("d")).extend(math.nan if v is None else v for v in row)

    def _rows(self, track: str) -> list[list[float | None]]:
        flat = self.boxes.get(track, array("d")).tolist()
        rows = [flat[i:i + 5] for i in range(0, len(flat), 5)]
        return [[None if math.isnan(r[0]) else r[0], *r[1:]] for r in rows]

    def _note(self, entry: dict) -> None:
        self.journal.write(json.dumps(entry, separators=(",", ":")) + "\n")  # a line per write(): a kill keeps it

    def sidecar(self) -> dict[str, Any]:
        voices = {track.removeprefix("voice_"): {"wav": wav.path.name, "boxes": self._rows(track)}
                  for track, wav in sorted(self.wavs.items(), key=lambda item: int(item[0].removeprefix("voice_")))}
        return {"sample_rate_hz": self.sample_rate_hz, "frame_width": self.frame_size[0],
                "frame_height": self.frame_size[1], "columns": ["time_s", "x", "y", "w", "h"], "voices": voices}

    def sidecar_json(self) -> str:
        """The sidecar as JSON with one line per voice: readable in an editor, not 7 lines per box."""
        doc = self.sidecar()
        voices = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.pop("voices").items())
        return json.dumps(doc)[:-1] + ',\n "voices": {\n  ' + voices + "\n }\n}\n"

    def stats(self) -> dict[str, float]:
        return {f"audio_s_written.{track}": seconds(wav.samples_from_input, self.sample_rate_hz)
                for track, wav in self.wavs.items()}


def _reopen(path: Path, sample_rate_hz: int) -> Any:
    """``path`` opened to append (``AppendingWav``); a new WAV if it cannot be (gone, another rate)."""
    try:
        return AppendingWav(path, sample_rate_hz)
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile raises RuntimeError/LibsndfileError
        log.warning("%s: cannot go on with it (%s); starting it anew", path, exc)
        return WavWriter(path, sample_rate_hz)


class AppendingWav(WavWriter):
    """A WAV an earlier process of the run wrote (it may have been killed: its header then says it
    is empty, and libsndfile takes the length from the file), opened to write on at its end; the
    header is right again once closed. ``samples_from_input`` counts this process's samples only."""

    def __init__(self, path: str | Path, sample_rate_hz: int) -> None:  # noqa: D107 - WavWriter's, reopened
        import soundfile as sf

        self.path = Path(path)
        self._file = sf.SoundFile(str(self.path), mode="r+")
        if self._file.samplerate != sample_rate_hz or self._file.channels != 1:
            self._file.close()
            raise ValueError(f"{self._file.samplerate} Hz, {self._file.channels} channel(s)")
        self._file.seek(0, sf.SEEK_END)
        self.samples_written = self.samples_before = self._file.frames
        self.samples_padded = 0

    @property
    def samples_from_input(self) -> int:
        return self.samples_written - self.samples_padded - self.samples_before


