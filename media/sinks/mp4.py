"""The MP4 sink: the drawn video, the mixture and one track per isolated voice in one file.

A renderer restarted after a crash or a kill -9 goes on writing the same file: the user ends with
one MP4 of the whole run, holding what was written before the kill. How, and why so:

* An MP4 gets its index (the ``moov`` box) when it is closed, so one killed mid-write cannot be
  read at all. Each process of the renderer therefore writes its own *part*, a fragmented MP4 (a
  self-contained fragment every half second, written out at once): a kill loses the last fragment
  and the frames still inside the encoder (about a second), not the file.
* The process that ends the run joins the parts into the one MP4 by copying their packets (a remux:
  nothing is decoded or encoded again) onto the run's timeline, and fills each audio track between
  two parts (the time the renderer was down) with silent AAC frames, so every track stays one gapless
  stream that players keep in sync; the video holds its last frame over the gap.
* A fragmented MP4 re-bases each track's timestamps to zero (and stretches or shortens a track's
  first sample to line the tracks' starts up), so a part's timing is kept beside it (``NNN.jsonl``:
  the first two packets of each stream as they went to the muxer), and so is the first part's frame
  size, which later parts keep: same size and encoder settings give the same codec headers, so the
  parts' packets can share one file.

Nothing here grows with the run's length at a restart: a new part starts with the first frame and
audio block it is given (an audio track on the AAC frame grid, so the silence between parts is
whole frames), instead of padding silence from the run's start. Only the final join reads every
part once, a copy at disk speed.

Audio that never reached the renderer (an input's queue dropped it, or it was lost before: see
``pipeline.transport``) is marked, not hidden (:meth:`Mp4Sink.mark_audio_gap`): the track holds
silence there (the writer fills any hole in the samples with it), the frames of that stretch and of
the second after it carry a red "AUDIO GAP" banner and border (a gap is known only once the audio
after it arrives, so the frames of the gap itself may be written already: the second after shows
it), and the file's ``comment`` metadata lists every gap (track, start–end s on the file's clock).
The gaps are noted in the part's ``.jsonl`` like the rest, so a restart keeps them.

The parts live beside the MP4 in ``.NAME.parts/``, tagged with the run's id (``EARSHOT_RUN_ID``,
which the node runner sets): a restarted renderer adds a part to its run's; a new run first removes
what an earlier run left there (one that was killed before it could join them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, DrawnFrame, Sink, json_lines, seconds
from media.writers import Mp4Writer

log = logging.getLogger("earshot.sinks.mp4")

#: the run's id, set by the node runner (pipeline/runner.py): same id = a restart within the run
RUN_ID_ENV = "EARSHOT_RUN_ID"
#: a part: fragmented (an empty moov up front, a fragment at each keyframe or half second, each written
#: out as soon as it is complete), so a process killed mid-write leaves every fragment before the last.
#: The muxer's interleaving may hold packets back only 0.1 s (the default, 10 s, is what it holds while
#: any track, a voice that is not speaking, has none: a kill would lose all of that).
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "500000",
              "flush_packets": "1", "max_interleave_delta": "100000"}
#: frames are marked "AUDIO GAP" from a gap's start to this long after its end (it is known only then)
GAP_MARK_HOLD_S = 1.0
#: the gaps a sink keeps in memory to mark frames by (all of them go to the part's notes)
RECENT_GAPS = 32
#: the gaps listed in the file's comment, the rest counted
LISTED_GAPS = 50


class Mp4Sink(Sink):
    """Opens the file on the first frame (only then is the size known); audio that comes
    earlier waits, up to ``pending_s`` of it per track. Track 0 is the mixture; voices take
    tracks 1..``voice_tracks`` in order of first appearance, the rest are counted, not written.

    ``run_id``: which run this sink writes for (default: ``$EARSHOT_RUN_ID``, else a new one, so a
    sink made outside a graph always starts its file anew)."""

    name = "mp4"

    def __init__(self, path: str | Path, fps: float, sample_rate_hz: int, voice_tracks: int,
                 pending_s: float = 10.0, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.fps, self.sample_rate_hz, self.voice_tracks = fps, sample_rate_hz, voice_tracks
        self.max_pending = int(pending_s * sample_rate_hz * 3)  # samples: the mixture and two voices
        self.parts = Parts(self.path, run_id or os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex)
        self.writer: PartWriter | None = None
        self.closed = False
        self.pending: list[tuple[Mapping[str, np.ndarray], int]] = []
        self.index_of: dict[str, int] = {MIXTURE: 0}  # track → audio stream in the file
        self.counts = {"audio_dropped_before_video": 0, "voices_not_in_mp4": 0, "audio_gaps": 0,
                       "frames_marked_audio_gap": 0}
        self.audio_gap_s = 0.0
        self.frames_in_file = 0  # after the join: the video frames of the whole run
        self.gaps: list[tuple[float, float]] = []  # the latest audio gaps (start, end s), to mark frames by
        self.unnoted: list[dict] = []  # gaps marked before this process's part was opened

    def video(self, frame: DrawnFrame) -> None:
        if self.writer is None:
            index = self.parts.start()
            self.index_of.update(self.parts.track_indices())  # a voice keeps its track across a restart
            height, width = self.parts.frame_size() or frame.image.shape[:2]
            self.writer = PartWriter(self.parts.part(index), width, height, self.fps, self.sample_rate_hz,
                                     audio_tracks=1 + self.voice_tracks, first_part=index == 0)
            for tracks, first_sample in self.pending:
                self.audio(tracks, first_sample)
            self.pending.clear()
            for note in self.unnoted:
                self.writer.note(note)
            self.unnoted.clear()
        image = frame.image
        if frame.time_s is not None and any(start <= frame.time_s <= end + GAP_MARK_HOLD_S for start, end in self.gaps):
            image = mark_audio_gap(image)
            self.counts["frames_marked_audio_gap"] += 1
        self.writer.write_frame(image, time_s=frame.time_s)

    def mark_audio_gap(self, track: str, start_s: float, end_s: float) -> None:
        """Audio of ``track`` (the mixture, ``voices``) from ``start_s`` to ``end_s`` on the file's clock
        never arrived: it is silence in the file; mark the frames there and list it in the file."""
        self.counts["audio_gaps"] += 1
        self.audio_gap_s += end_s - start_s
        self.gaps = [*self.gaps[-(RECENT_GAPS - 1):], (start_s, end_s)]
        note = {"audio_gap": [round(start_s, 3), round(end_s, 3)], "track": track}
        if self.writer is not None:
            self.writer.note(note)
        else:
            self.unnoted = [*self.unnoted[-(RECENT_GAPS - 1):], note]

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        if self.writer is None:
            self.pending.append((tracks, first_sample))
            while sum(s.size for block, _ in self.pending for s in block.values()) > self.max_pending:
                self.pending.pop(0)
                self.counts["audio_dropped_before_video"] += 1
            return
        for track, samples in tracks.items():
            index = self.index_of.get(track)
            if index is None:
                index = self.index_of[track] = len(self.index_of)
                self.writer.note({"track": track, "index": index})
            if index <= self.voice_tracks:
                self.writer.write_audio(samples, index, first_sample)
            else:
                self.counts["voices_not_in_mp4"] += 1

    def close(self) -> list[Path]:
        """Finish this process's part, then join every part of the run into the MP4 (also when this
        process wrote none: it was restarted and no frame came before the end)."""
        if self.closed:
            return []
        self.closed = True
        if self.writer is not None:
            self.writer.close()
        elif self.pending:
            log.warning("no video frame arrived: %s not written", self.path)
            self.pending.clear()
        if not self.parts.ours():
            return []
        self.frames_in_file = self.parts.join(self.path)
        log.info("wrote %s (%d frames)", self.path, self.frames_in_file)
        return [self.path] if self.frames_in_file and self.path.exists() else []

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"frames_written": self.writer.frames_written if self.writer else 0, **self.counts,
                                 "audio_gap_s": round(self.audio_gap_s, 3)}
        if self.frames_in_file:
            out["frames_in_file"] = self.frames_in_file
        for track, index in self.index_of.items():
            if self.writer is not None and index <= self.voice_tracks:
                out[f"audio_s_written.{track}"] = seconds(self.writer.audio_samples_from_input(index),
                                                          self.sample_rate_hz)
        return out


class PartWriter(Mp4Writer):
    """One process's part: an :class:`Mp4Writer` whose file is a fragmented MP4, and which notes in
    ``NNN.jsonl`` the frame size, each stream's first two packets (pts, dts, time base) as they went
    to the muxer, and (``note``) which track each voice took. In a part after the first, an audio
    track starts at its first block (on the AAC frame grid) rather than at the file's time zero: no
    silence for the time before the restart."""

    def __init__(self, path: Path, width: int, height: int, fps: float, sample_rate_hz: int,
                 audio_tracks: int, first_part: bool) -> None:
        super().__init__(path, width, height, fps, sample_rate_hz, audio_tracks=audio_tracks)
        self._container.container_options.update(FRAGMENTED)
        self.timing = open(timing_of(path), "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - a line per write()
        self.note({"width": self.width, "height": self.height})
        self._container = _NotingFirstPackets(self._container, self.note)
        self.first_part = first_part
        self.skipped_in = [0] * audio_tracks  # input samples before a track's start: neither written nor given

    def note(self, entry: dict) -> None:
        self.timing.write(json.dumps(entry) + "\n")  # one write() per line: a kill keeps what was noted

    def write_audio(self, samples_float32_mono: np.ndarray, track: int = 0, first_sample: int | None = None) -> None:
        if not self.first_part and first_sample and 0 <= track < len(self._audio):
            audio = self._audio[track]
            if audio.samples_in == 0 and audio.samples_out == 0:  # the track's first block in this part
                frame = audio.stream.codec_context.frame_size or 1024
                start_out = first_sample * audio.encode_rate_hz // audio.input_rate_hz // frame * frame
                audio.samples_out = start_out
                audio.samples_in = self.skipped_in[track] = start_out * audio.input_rate_hz // audio.encode_rate_hz
        super().write_audio(samples_float32_mono, track, first_sample)

    def audio_samples_from_input(self, track: int) -> int:
        return super().audio_samples_from_input(track) - self.skipped_in[track]

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.timing.close()


class _NotingFirstPackets:
    """Stands in for the writer's container: notes the first two packets of each stream, then muxes."""

    def __init__(self, container: Any, note) -> None:  # noqa: ANN001 (a callable)
        self.container, self.note, self.seen = container, note, {}

    def mux(self, packets: Any) -> None:
        for packet in packets if isinstance(packets, list) else [packets]:
            index = packet.stream.index
            n = self.seen.get(index, 0)
            if n < 2 and packet.dts is not None:
                self.seen[index] = n + 1
                tb = packet.time_base
                self.note({"stream": index, "n": n, "pts": packet.pts, "dts": packet.dts,
                           "tb": [tb.numerator, tb.denominator]})
        self.container.mux(packets)

    def close(self) -> None:
        self.container.close()


def timing_of(part: Path) -> Path:
    return part.with_suffix(".jsonl")


class Parts:
    """The parts of one run's MP4, in ``.NAME.parts/`` beside it: ``000.mp4``, ``001.mp4``… (one per
    process of the renderer), each with its ``.jsonl``, and ``run`` naming the run they belong to."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.dir = path.parent / f".{path.name}.parts"
        self.run_id = run_id

    def ours(self) -> bool:
        """Whether the folder holds this run's parts (written by this process or earlier ones)."""
        try:
            return (self.dir / "run").read_text() == self.run_id
        except OSError:
            return False

    def start(self) -> int:
        """The index of a new part; a previous run's parts (it was killed before joining them) go."""
        if not self.ours():
            if self.dir.exists():
                log.warning("removing %s: parts of an earlier run that never finished", self.dir)
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            (self.dir / "run").write_text(self.run_id)
        return len(self.list())

    def part(self, index: int) -> Path:
        return self.dir / f"{index:03d}.mp4"

    def list(self) -> list[Path]:
        return sorted(self.dir.glob("[0-9][0-9][0-9].mp4"))

    def track_indices(self) -> dict[str, int]:
        """Which audio stream each track (the mixture, a voice) took in this run's earlier parts."""
        return {e["track"]: e["index"] for part in self.list() for e in json_lines(timing_of(part))
                if "track" in e and "index" in e}  # (an audio gap's note names a track too, without an index)

    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the first part, which every later part keeps."""
        for line in json_lines(timing_of(self.part(0))):
            if "width" in line:
                return line["height"], line["width"]
        return None

    def join(self, out: Path) -> int:
        """Copy every part's packets into ``out`` (a regular MP4) on the run's timeline, silence
        between the parts' audio; remove the parts. Returns the video frames written. A part that
        cannot be read or does not match the first (another codec header) is left out, and then the
        parts are kept, so nothing is lost."""
        import av

        out.parent.mkdir(parents=True, exist_ok=True)
        joining = out.with_name(f".{out.name}.joining")
        joined, left_out, frames = 0, [], 0
        gaps = [e for part in self.list() for e in json_lines(timing_of(part)) if "audio_gap" in e]
        with av.open(str(joining), "w", format="mp4") as dst:
            if gaps:
                dst.metadata["comment"] = gaps_comment(gaps)
            streams: list[Any] | None = None
            headers: list[bytes | None] = []
            tracks = _Tracks()
            for part in self.list():
                first = {}  # stream → its first two packets' timing, as they went to the muxer
                for entry in json_lines(timing_of(part)):
                    if "stream" in entry:
                        first.setdefault(entry["stream"], []).append(entry)
                whole = whole_fragments(part)
                if whole < part.stat().st_size:  # (the reader would hand on the cut packets, short)
                    log.info("%s: the renderer was killed while writing its last fragment; dropping that", part)
                    os.truncate(part, whole)
                try:
                    src = av.open(str(part))
                except (av.FFmpegError, OSError) as exc:  # killed before its first fragment
                    log.info("%s: nothing readable (%s); the renderer stopped before writing any of it", part, exc)
                    continue
                with src:
                    if streams is None:
                        streams = [dst.add_stream_from_template(s) for s in src.streams]
                        for s, d in zip(src.streams, streams):  # the tracks' names, as Mp4Writer gave them
                            title = s.metadata.get("title") or s.metadata.get("name")
                            if title:
                                d.metadata["title"] = title
                            if "handler_name" in s.metadata:
                                d.metadata["handler_name"] = s.metadata["handler_name"]
                        headers = [s.codec_context.extradata for s in src.streams]
                    elif [s.codec_context.extradata for s in src.streams] != headers:
                        log.warning("%s: its codec headers differ from the first part's; left out", part)
                        left_out.append(part)
                        continue
                    frames += tracks.copy(src, dst, streams, first, part)
                    joined += 1
        if not joined:
            joining.unlink(missing_ok=True)
            return 0
        os.replace(joining, out)
        if joined > 1:
            log.info("%s: joined %d parts (the renderer was restarted %d times)", out, joined, joined - 1)
        if not left_out:
            shutil.rmtree(self.dir, ignore_errors=True)
        return frames


class _Tracks:
    """The join's state per output stream: the last dts written, and where an audio track ends."""

    def __init__(self) -> None:
        self.last_dts: dict[int, int] = {}
        self.audio_end: dict[int, int] = {}  # in the stream's time base
        self.silence: dict[int, bytes] = {}

    def copy(self, src: Any, dst: Any, streams: list[Any], first: dict[int, list[dict]], part: Path) -> int:
        """Mux one part's packets, re-based on the run's timeline: a stream's first packet at the time
        noted when it was written, the rest shifted by what the fragmenting took off the second (the
        first sample of a track may read back longer or shorter than it was: it lines the tracks up)."""
        frames, count, shift, first_dts = 0, {}, {}, {}
        try:
            for packet in src.demux():
                index = packet.stream.index
                notes = first.get(index, [])
                if packet.dts is None or not notes or index >= len(streams):
                    continue  # a flush packet; or a stream whose first packet was not noted
                tb = packet.time_base
                n = count[index] = count.get(index, -1) + 1
                noted = [(round(e["pts"] * Fraction(*e["tb"]) / tb), round(e["dts"] * Fraction(*e["tb"]) / tb))
                         for e in notes]
                if n == 0:
                    (pts, dts), duration = noted[0], packet.duration
                    if len(noted) > 1:
                        duration = noted[1][1] - noted[0][1]
                    first_dts[index] = packet.dts
                else:
                    if index not in shift:  # (a second packet whose note is missing: the first's shift)
                        shift[index] = noted[1][1] - packet.dts if len(noted) > 1 else noted[0][1] - first_dts[index]
                    pts, dts, duration = packet.pts + shift[index], packet.dts + shift[index], packet.duration
                if packet.stream.type == "audio":
                    self._fill_silence(dst, streams[index], packet.stream, pts, tb)
                if dts <= self.last_dts.get(index, dts - 1):
                    continue  # overlaps what an earlier part wrote (cannot happen but for clock trouble)
                packet.stream = streams[index]
                packet.pts, packet.dts, packet.duration = pts, dts, duration
                packet.time_base = tb
                dst.mux(packet)
                self.last_dts[index] = dts
                if packet.stream.type == "audio":
                    self.audio_end[index] = pts + duration
                else:
                    frames += 1
        except av_errors() as exc:  # a part cut by a kill ends in a fragment only partly written
            log.info("%s: read up to where the renderer was stopped (%s)", part, exc)
        return frames

    def _fill_silence(self, dst: Any, stream: Any, src_stream: Any, pts: int, tb: Fraction) -> None:
        """Silent AAC frames from where the track ended to ``pts`` (the renderer was down meanwhile)."""
        end = self.audio_end.get(stream.index)
        frame = src_stream.codec_context.frame_size or 1024
        if end is None or pts - end < frame:
            return
        import av

        data = self.silence.get(stream.index) or self.silence.setdefault(stream.index, silent_aac_frame(src_stream))
        while end + frame <= pts:
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = end
            packet.duration = frame
            packet.time_base = tb
            dst.mux(packet)
            self.last_dts[stream.index] = end
            end += frame
        self.audio_end[stream.index] = end


def mark_audio_gap(image: np.ndarray) -> np.ndarray:
    """A copy of a frame with a red border and a red "AUDIO GAP" banner (the frame itself is shared
    with the other sinks, which must not see the mark)."""
    import cv2

    marked = image.copy()
    h, w = marked.shape[:2]
    red = (0, 0, 255)
    t = max(4, min(h, w) // 40)  # a border inside the frame, thick enough to survive 4:2:0 chroma
    cv2.rectangle(marked, (t // 2, t // 2), (w - 1 - t // 2, h - 1 - t // 2), red, t)
    scale = max(0.4, min(h, w) / 400)
    (tw, th), _ = cv2.getTextSize("AUDIO GAP", cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    x, y = max(0, (w - tw) // 2), max(th + 4, h // 8)
    cv2.rectangle(marked, (x - 6, y - th - 6), (min(w - 1, x + tw + 6), y + 6), red, -1)
    cv2.putText(marked, "AUDIO GAP", (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return marked


def gaps_comment(gaps: list[dict]) -> str:
    """The MP4's comment: every audio gap noted in the parts, as ``track start–end s``."""
    listed = [f"{e.get('track', '?')} {e['audio_gap'][0]:.2f}-{e['audio_gap'][1]:.2f} s" for e in gaps[:LISTED_GAPS]]
    more = f"; and {len(gaps) - LISTED_GAPS} more" if len(gaps) > LISTED_GAPS else ""
    return f"Earshot: audio gaps (silence here, audio that never reached the renderer): {'; '.join(listed)}{more}"


def whole_fragments(part: Path) -> int:
    """The length of ``part`` up to its last whole fragment. A part killed while a fragment was being
    written ends in a ``moof`` or ``mdat`` box cut short (their sizes say so), or in a ``moof`` whose
    ``mdat`` never came; a closed part ends whole (in an ``mfra``)."""
    size, end, whole = part.stat().st_size, 0, 0
    with open(part, "rb") as file:
        while end + 8 <= size:
            file.seek(end)
            head = file.read(16)
            box_size, kind = struct.unpack(">I4s", head[:8])
            if box_size == 1 and len(head) == 16:
                box_size = struct.unpack(">Q", head[8:16])[0]
            if box_size < 8 or end + box_size > size:  # cut short (0, "to the end", is never written here)
                break
            end += box_size
            if kind != b"moof":  # a fragment counts once its mdat is whole
                whole = end
    return whole


def silent_aac_frame(stream: Any) -> bytes:
    """One AAC frame of silence for ``stream``'s rate and channels, from a fresh encoder (a frame
    past its start-up, which is all zeros too)."""
    import av

    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate = stream.codec_context.sample_rate
    ctx.layout = stream.codec_context.layout.name
    ctx.format = "fltp"
    ctx.bit_rate = stream.codec_context.bit_rate or 64000
    size = stream.codec_context.frame_size or 1024
    packets = []
    for i in range(4):
        frame = av.AudioFrame(format="fltp", layout=ctx.layout.name, samples=size)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts = ctx.sample_rate, i * size
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return bytes(packets[min(2, len(packets) - 1)])


def av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, EOFError)

