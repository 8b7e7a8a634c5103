"""Renderer: the end of the graph, where people see and hear what Earshot perceived.

open the sinks the config asks for (``media/sinks/``: MP4 + its frame record, WAVs + voices.json,
window, browser, speakers) → for each frame draw the overlays (``media.overlay``) and give frames and audio to the
sinks, placed by capture time (``media.timeline``) → close: finish the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from media import overlay
from media.sinks import (MIXTURE, DrawnFrame, FrameRecordSink, Mp4Sink, Sinks, SpeakerSink, VirtualMicSink, WavSink,
                         WebSink, WindowSink, voice_track)
from media.sinks.sink import VoiceChoice
from media.timeline import Timeline
from pipeline.messages import AudioChunk, FaceTracks, Heatmap, SeparatedAudio, VideoFrame
from pipeline.node import BadInput, Input, Node

#: voices in one SeparatedAudio: each new track id opens a WAV file
MAX_VOICES = 64


class Renderer(Node):
    """Draws the perception results on the video and writes/shows/plays them."""

    @dataclass
    class Params:
        mp4_path: str = ""            # "" = no file
        # one JSON line per drawn frame (heatmap peak, face boxes, speaking face: media/sinks/frame_record.py);
        # "" = beside the MP4 (out/demo.mp4 → out/demo.jsonl), none without one; "none" = never
        record_path: str = ""
        wav_dir: str = ""             # "" = no WAVs; else voice_<track id>.wav per isolated voice + voices.json
        window: bool = False          # desktop window; ignored (with a note) when there is no display
        web_port: int = -1            # browser live view: -1 off, 0 any free port
        web_host: str = "127.0.0.1"   # loopback: the view shows a camera
        audio_out: bool = False       # play the selected voice (or the mixture) through PyAudio
        audio_out_device: str = ""    # device name (substring) or index; "" = default
        # track id to play; -1 = the loudest voice, else the mixture. The default: a click on a face in
        # the browser view plays that face instead, until it is clicked again (media/sinks/web.py)
        play_track: int = -1
        virtual_mic: str = ""         # "" = off; else a PulseAudio source of that name that call apps see as a mic
        fps: float = 30.0             # MP4 nominal rate (frames are still placed by capture time)
        voice_tracks: int = -1        # MP4 audio tracks for voices; -1 = 2 if `voices` is wired
        sample_rate_hz: int = 16000
        heatmap_alpha: float = 0.45
        # the localizer's map is a clipped cosine: a sounding cell sits near 0.3-0.5, rarely at 1, so
        # drawn as is it is faint; the gain scales it for display only (clipped at 1)
        heatmap_gain: float = 2.0
        colormap: Literal["jet", "turbo", "inferno", "magma", "viridis", "hot"] = "jet"
        stale_ms: float = 500.0       # overlays older than this (vs. the frame) are not drawn
        latency_strip: bool = True

        def validate(self) -> None:
            if self.fps <= 0 or self.sample_rate_hz <= 0:
                raise ValueError("fps and sample_rate_hz must be positive")
            if not 0.0 <= self.heatmap_alpha <= 1.0:
                raise ValueError(f"heatmap_alpha must be in [0, 1], got {self.heatmap_alpha}")
            if self.heatmap_gain <= 0:
                raise ValueError(f"heatmap_gain must be positive, got {self.heatmap_gain}")

    inputs = {
        "video": Input(VideoFrame, policy="latest", doc="frames to draw on", waits_for=("heatmap", "faces")),
        "audio": Input(AudioChunk, policy="queue", size=256, doc="the mixture, for the MP4 and the speakers"),
        "heatmap": Input(Heatmap, policy="latest", doc="optional: where the sound comes from"),
        "faces": Input(FaceTracks, policy="latest", doc="optional: boxes and track ids"),
        "voices": Input(SeparatedAudio, policy="queue", size=256, doc="optional: one isolated voice per track"),
    }
    outputs: dict = {}
    wants_telemetry = True

    def open(self) -> None:
        p = self.params
        self.sinks, self.artifacts = Sinks(p.sample_rate_hz), []  # artifacts: the view's URL, files written
        self.timeline = Timeline(p.sample_rate_hz, lambda: self.epoch_ns)
        self.heatmap, self.faces = None, None  # the newest Heatmap and FaceTracks
        self.levels: dict[int, float] = {}  # track id → RMS of its newest isolated block
        voice_tracks = p.voice_tracks if p.voice_tracks >= 0 else 2 if self.is_wired("voices") else 0
        # whose voice the speakers / virtual mic play, changed live by clicks in the browser view: one
        # object both kinds of sink hold, because the clicks come on the view's server threads, at any
        # time, and must reach the audio at its next block (see VoiceChoice). None: nothing plays a voice.
        self.choice = VoiceChoice(f"face {p.play_track}" if p.play_track != -1 else "the loudest voice") \
            if p.audio_out or p.virtual_mic else None
        self.sinks.add(Mp4Sink(p.mp4_path, p.fps, p.sample_rate_hz, voice_tracks) if p.mp4_path else None)
        self.sinks.add(FrameRecordSink(self.record_path()) if self.record_path() else None)
        self.sinks.add(WavSink(p.wav_dir, p.sample_rate_hz) if p.wav_dir else None)
        self.sinks.add(WindowSink(f"Earshot {self.name}") if p.window else None)
        self.sinks.add(WebSink(p.web_host, p.web_port, f"Earshot — {self.name}", choice=self.choice)
                       if p.web_port >= 0 else None)
        self.sinks.add(SpeakerSink(p.audio_out_device, p.sample_rate_hz, p.play_track, self.choice)
                       if p.audio_out else None)
        self.sinks.add(VirtualMicSink(p.virtual_mic, p.sample_rate_hz, p.play_track, choice=self.choice)
                       if p.virtual_mic else None)
        self.artifacts += self.sinks.urls()

    def record_path(self) -> str:
        """Where the frame record goes: the param, else the MP4's path with ``.jsonl``, else nowhere."""
        p = self.params
        if p.record_path == "none":
            return ""
        return p.record_path or (str(Path(p.mp4_path).with_suffix(".jsonl")) if p.mp4_path else "")

    def on_message(self, port: str, msg: Any) -> None:
        self._check(port, msg)
        if port == "video":
            self.sinks.video(self._draw(msg))
            if msg.capture_ns:
                self.observe("glass_to_output_ms", (time.monotonic_ns() - msg.capture_ns) / 1e6)
        elif port in ("audio", "voices"):
            if msg.sample_rate_hz != self.params.sample_rate_hz:
                raise BadInput(f"{port} at {msg.sample_rate_hz} Hz, renderer set to {self.params.sample_rate_hz} Hz")
            if port == "audio":  # the mixture, mono
                tracks = {MIXTURE: msg.samples.mean(axis=1, dtype=np.float32) if msg.samples.ndim == 2 else msg.samples}
            else:
                tracks = {voice_track(i): s for i, s in zip(msg.track_ids.tolist(), msg.samples)}
                self.levels.update(overlay.rms_by_track(msg.track_ids.tolist(), msg.samples))
            self.sinks.audio(tracks, self.timeline.place(port, msg.capture_ns, msg.first_sample))
            self.timeline.placed(port, msg.first_sample, msg.samples.shape[0 if port == "audio" else 1])
        elif port == "heatmap":
            self.heatmap = msg
        elif port == "faces":
            self.faces = msg
            self.sinks.faces(self.timeline.seconds(msg.capture_ns), msg.track_ids.tolist(), msg.boxes,
                             (msg.frame_width, msg.frame_height))

    def on_audio_gap(self, port: str, gap: Any) -> None:
        """Audio of ``port`` that never arrived (the runtime counted and logged it): the MP4 marks it
        where it lies on the files' clock (silence in the track, "AUDIO GAP" on its frames, the file's
        comment). A gap the timeline cannot place yet (nothing anchors it) is left to the counts and log."""
        span = self.timeline.span_s(port, gap.capture_ns, gap.first_sample, gap.samples) \
            if port in ("audio", "voices") and gap.sample_rate_hz == self.params.sample_rate_hz else None
        if span is not None and "mp4" in self.sinks:
            self.sinks["mp4"].mark_audio_gap(MIXTURE if port == "audio" else port, *span)

    def _check(self, port: str, msg: Any) -> None:
        """Refuse what cannot be drawn or placed (`Timeline.admit`: stamps far off the timeline)."""
        if port == "heatmap" and min(msg.heatmap.shape) < 1:
            raise BadInput(f"heatmap of shape {msg.heatmap.shape}")
        if port == "voices" and len(msg.track_ids) > MAX_VOICES:
            raise BadInput(f"{len(msg.track_ids)} voices in one message, limit {MAX_VOICES}")
        if port in ("video", "audio", "voices"):
            audio = port != "video"
            try:
                self.timeline.admit(port, msg.capture_ns, msg.first_sample if audio else None,
                                    msg.sample_rate_hz if audio else 0)
            except ValueError as exc:
                raise BadInput(str(exc)) from None

    def _draw(self, frame: VideoFrame) -> DrawnFrame:
        """The compute step: overlays on a writable copy of the frame (received arrays are read-only)."""
        t0, p, canvas = time.perf_counter(), self.params, np.array(frame.image)
        rows = overlay.latency_rows(self.telemetry)  # every node's latency, from the heartbeats
        heat = self.heatmap if self._fresh(self.heatmap, frame) else None
        drawn = DrawnFrame(canvas, self.timeline.seconds(frame.capture_ns), frame.frame_index, rows)
        if heat is not None:  # the gain's excess is clipped to 1 in draw_heatmap
            overlay.draw_heatmap(canvas, heat.heatmap * p.heatmap_gain, p.heatmap_alpha, p.colormap)
            drawn.heatmap = heat.heatmap
            if heat.speaking_track_id >= 0:
                drawn.speaking, drawn.speaking_score = heat.speaking_track_id, heat.speaking_score
        if self._fresh(self.faces, frame):
            f, ids = self.faces, self.faces.track_ids.tolist()
            boxes = overlay.scale_boxes(f.boxes, (f.frame_width, f.frame_height), canvas.shape)
            # with a heatmap wired, its lip-sync choice tags the speaker (a stale or missing one: nobody);
            # without one, the voices' levels do, as before the fusion named a face
            named = (-1 if drawn.speaking is None else drawn.speaking) if self.is_wired("heatmap") else None
            overlay.draw_faces(canvas, boxes, ids, rms_by_track=self.levels,
                               speaking=overlay.speaking_ids(ids, self.levels, named))
            drawn.faces = dict(zip(ids, boxes.tolist()))
        if p.latency_strip:
            overlay.draw_latency_strip(canvas, rows)
        age_ms = (time.monotonic_ns() - frame.capture_ns) / 1e6 if frame.capture_ns else 0.0
        overlay.draw_frame_number(canvas, frame.frame_index, f"age {age_ms:.0f} ms")
        self.observe("draw_ms", (time.perf_counter() - t0) * 1e3)
        return drawn

    def _fresh(self, item: Heatmap | FaceTracks | None, frame: VideoFrame) -> bool:  # drawable with this frame?
        return item is not None and (not item.capture_ns or not frame.capture_ns or
                                     abs(frame.capture_ns - item.capture_ns) <= self.params.stale_ms * 1e6)

    def tick(self) -> None:
        self.counters.update(self.sinks.stats())  # for the heartbeat: what came in, what each sink made of it
        # whose voice plays: voice_choice.faces (0: the default), .track (-1: the default), .changes
        if getattr(self, "choice", None) is not None:
            self.counters.update({f"voice_choice.{k}": v for k, v in self.choice.stats().items()})

    def summary(self) -> str:
        return self.sinks.summary() if hasattr(self, "sinks") else ""

    def on_end(self) -> None:
        self.close()  # the stream is over: finish the files now

    def close(self) -> None:
        if hasattr(self, "sinks"):  # (not if open failed before making them)
            self.artifacts += [str(path.resolve()) for path in self.sinks.close()]
            self.tick()
