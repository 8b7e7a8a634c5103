"""Renderer: the end of the graph, where people see and hear what Earshot perceived.

Each video frame is copied (received arrays are read-only), dressed with the newest
heatmap, face boxes, speaking indicators, the per-node latency strip and the frame
number, then handed to whichever outputs the graph asked for: an MP4 (video + mixture +
one track per isolated voice), a WAV per voice, a desktop window, a browser live view and
the selected voice on the speakers.

Timing: everything is put on the file's timeline by capture time, so a frame and the
audio captured with it line up however late each arrived. The timeline starts at the
graph's epoch (file sources pace from it); audio chunks are anchored once by their
capture time and then placed by sample count, which does not jitter.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.messages import AudioChunk, FaceTracks, Heatmap, SeparatedAudio, VideoFrame
from pipeline.node import BadInput, Input, Node


class Renderer(Node):
    """Draws the perception results on the video and writes/shows/plays them."""

    @dataclass
    class Params:
        mp4_path: str = ""            # "" = no file
        wav_dir: str = ""             # "" = no WAVs; else voice_<track id>.wav per isolated voice
        window: bool = False          # desktop window; ignored (with a note) when there is no display
        web_port: int = -1            # browser live view: -1 off, 0 any free port
        web_host: str = "127.0.0.1"   # loopback: the view shows a camera
        audio_out: bool = False       # play the selected voice (or the mixture) through PyAudio
        audio_out_device: str = ""    # device name (substring) or index; "" = default
        play_track: int = -1          # track id to play; -1 = the loudest voice, else the mixture
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
        "video": Input(VideoFrame, policy="latest", doc="frames to draw on"),
        "audio": Input(AudioChunk, policy="queue", size=256, doc="the mixture, for the MP4 and the speakers"),
        "heatmap": Input(Heatmap, policy="latest", doc="optional: where the sound comes from"),
        "faces": Input(FaceTracks, policy="latest", doc="optional: boxes and track ids"),
        "voices": Input(SeparatedAudio, policy="queue", size=256, doc="optional: one isolated voice per track"),
    }
    outputs: dict = {}
    wants_telemetry = True

    # -- open ----------------------------------------------------------------------------

    def open(self) -> None:
        p = self.params
        self.artifacts: list[str] = []  # reported in heartbeats: where the files are
        self.heatmap: Heatmap | None = None
        self.faces: FaceTracks | None = None
        self.levels: dict[int, float] = {}  # track id → RMS of its newest separated block
        self.origin_ns: int | None = None   # monotonic time of the files' time zero
        self.anchors: dict[str, int] = {}   # stream → sample offset on the file timeline
        self.voice_track_of: dict[int, int] = {}  # track id → MP4 audio track
        self.wavs: dict[int, Any] = {}
        self.mp4 = None
        self.pending: list[tuple[str | int, np.ndarray, int]] = []  # audio that came before the first frame
        self.frames = 0
        self.view = None
        self.window = p.window and self._has_display()
        self.speaker = self._open_speaker() if p.audio_out else None
        if p.web_port >= 0:
            from media.web_view import WebView

            self.view = WebView(p.web_host, p.web_port, title=f"Earshot — {self.name}").start()
            self.log.info("live view at %s", self.view.url)
            self.artifacts.append(self.view.url)

    # -- loop ----------------------------------------------------------------------------

    def on_message(self, port: str, msg: Any) -> None:
        if port == "video":
            self._render(msg)
        elif port == "audio":
            self._mixture(msg)
        elif port == "voices":
            self._voices(msg)
        elif port == "heatmap":
            self.heatmap = msg
        elif port == "faces":
            self.faces = msg

    def _render(self, frame: VideoFrame) -> None:
        from media import overlay

        t0 = time.perf_counter()
        canvas = np.array(frame.image)  # a writable copy
        if self.heatmap is not None and self._fresh(self.heatmap, frame):
            overlay.draw_heatmap(canvas, self.heatmap.heatmap * self.params.heatmap_gain,  # clipped to 1 there
                                 self.params.heatmap_alpha, self.params.colormap)
        if self.faces is not None and self._fresh(self.faces, frame):
            sx = canvas.shape[1] / self.faces.frame_width if self.faces.frame_width else 1.0
            sy = canvas.shape[0] / self.faces.frame_height if self.faces.frame_height else 1.0
            for box, track_id in zip(self.faces.boxes, self.faces.track_ids):
                rms = self.levels.get(int(track_id))
                overlay.draw_face(canvas, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), int(track_id),
                                  None if rms is None else overlay.level_from_rms(rms))
        rows = overlay.latency_rows(self.telemetry)
        if self.params.latency_strip:
            overlay.draw_latency_strip(canvas, rows)
        age_ms = (time.monotonic_ns() - frame.capture_ns) / 1e6 if frame.capture_ns else 0.0
        overlay.draw_frame_number(canvas, frame.frame_index, f"age {age_ms:.0f} ms")
        self.observe("draw_ms", (time.perf_counter() - t0) * 1e3)

        if self.params.mp4_path:
            # unstamped frames (capture_ns 0) just follow each other at `fps`
            time_s = max(self._file_time_ns(frame.capture_ns), 0) / 1e9 if frame.capture_ns else None
            self._writer(canvas).write_frame(canvas, time_s=time_s)
        if self.view is not None:
            self.view.publish(canvas, rows, frame.frame_index)
        if self.window:
            import cv2

            cv2.imshow(f"Earshot {self.name}", canvas)
            cv2.waitKey(1)
        self.frames += 1
        if frame.capture_ns:
            self.observe("glass_to_output_ms", (time.monotonic_ns() - frame.capture_ns) / 1e6)

    def _mixture(self, chunk: AudioChunk) -> None:
        samples = self._mono(chunk.samples, chunk.sample_rate_hz)
        if self.params.mp4_path:
            self._audio_to_mp4("mixture", samples, self._place("mixture", chunk))
        if self.speaker is not None and self.params.play_track == -1 and not self.levels:
            self.speaker.write(samples)  # no voices (yet): the speakers play the mixture

    def _voices(self, msg: SeparatedAudio) -> None:
        if msg.sample_rate_hz != self.params.sample_rate_hz:
            raise BadInput(f"voices at {msg.sample_rate_hz} Hz, renderer set to {self.params.sample_rate_hz} Hz")
        start = self._place("voices", msg)
        for samples, track_id in zip(msg.samples, msg.track_ids.tolist()):
            self.levels[track_id] = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
            if self.params.mp4_path:
                self._audio_to_mp4(track_id, samples, start)
            if self.params.wav_dir:
                self._wav(track_id).write(samples, start)
        if self.speaker is not None:
            self.speaker.write(self._selected_voice(msg))

    # -- end -----------------------------------------------------------------------------

    def on_end(self) -> None:
        self._finish()

    def close(self) -> None:
        self._finish()
        if self.view is not None:
            self.view.close()
            self.view = None
        if self.speaker is not None:
            self.speaker.close()
            self.speaker = None
        if self.window:
            import cv2

            cv2.destroyAllWindows()

    def _finish(self) -> None:
        """Finalise files (idempotent: on_end and close both get here)."""
        if self.mp4 is not None:
            self.mp4.close()
            self.log.info("wrote %s (%d frames)", self.mp4.path, self.frames)
            self.mp4 = None
        elif self.params.mp4_path and self.pending:
            self.log.warning("no video frame arrived: %s not written", self.params.mp4_path)
        self.pending.clear()
        for wav in self.wavs.values():
            wav.close()
            self.log.info("wrote %s", wav.path)
        self.wavs.clear()

    # -- helpers -------------------------------------------------------------------------

    def _writer(self, canvas: np.ndarray) -> Any:
        """The MP4 is opened on the first frame: only then is the frame size known."""
        if self.mp4 is None:
            from media.writers import Mp4Writer

            voices = self.params.voice_tracks
            if voices < 0:
                voices = 2 if self.is_wired("voices") else 0
            self.mp4_audio_tracks = 1 + voices
            self.mp4 = Mp4Writer(self.params.mp4_path, canvas.shape[1], canvas.shape[0], self.params.fps,
                                 self.params.sample_rate_hz, audio_tracks=self.mp4_audio_tracks)
            self.artifacts.append(str(Path(self.params.mp4_path).resolve()))
            for key, samples, start in self.pending:
                self._audio_to_mp4(key, samples, start)
            self.pending.clear()
        return self.mp4

    def _audio_to_mp4(self, key: str | int, samples: np.ndarray, start: int) -> None:
        """Mixture → track 0; each voice its own track, in order of first appearance."""
        if self.mp4 is None:  # the file opens with the first frame; keep ≤ 10 s until then
            self.pending.append((key, samples, start))
            while sum(s.size for _, s, _ in self.pending) > 10 * self.params.sample_rate_hz * 3:
                self.pending.pop(0)
                self.count("audio_dropped_before_video")
            return
        if key == "mixture":
            track = 0
        else:
            track = self.voice_track_of.setdefault(int(key), len(self.voice_track_of) + 1)
        if track < self.mp4_audio_tracks:
            self.mp4.write_audio(samples, track, start)
        else:
            self.count("voices_not_in_mp4")

    def _wav(self, track_id: int) -> Any:
        if track_id not in self.wavs:
            from media.writers import WavWriter

            path = Path(self.params.wav_dir) / f"voice_{track_id}.wav"
            self.wavs[track_id] = WavWriter(path, self.params.sample_rate_hz)
            self.artifacts.append(str(path.resolve()))
        return self.wavs[track_id]

    def _origin_ns(self, capture_ns: int) -> int:
        """Time zero of the files: the graph's epoch, or the first capture if it predates it."""
        if self.origin_ns is None:
            epoch = self.epoch_ns or 0
            self.origin_ns = epoch if 0 < epoch <= capture_ns else capture_ns
        return self.origin_ns

    def _file_time_ns(self, capture_ns: int) -> int:
        return capture_ns - self._origin_ns(capture_ns)

    def _place(self, stream: str, msg: AudioChunk | SeparatedAudio) -> int:
        """Where a block starts on the file timeline, in samples: anchored once, then counted."""
        if stream not in self.anchors:
            start = round(self._file_time_ns(msg.capture_ns) * self.params.sample_rate_hz / 1e9)
            self.anchors[stream] = start - msg.first_sample
        return max(self.anchors[stream] + msg.first_sample, 0)

    def _mono(self, samples: np.ndarray, rate_hz: int) -> np.ndarray:
        if rate_hz != self.params.sample_rate_hz:
            raise BadInput(f"audio at {rate_hz} Hz, renderer set to {self.params.sample_rate_hz} Hz")
        return samples.mean(axis=1, dtype=np.float32) if samples.ndim == 2 else samples

    def _fresh(self, overlay_msg: Heatmap | FaceTracks, frame: VideoFrame) -> bool:
        if not overlay_msg.capture_ns or not frame.capture_ns:
            return True
        return abs(frame.capture_ns - overlay_msg.capture_ns) <= self.params.stale_ms * 1e6

    def _selected_voice(self, msg: SeparatedAudio) -> np.ndarray:
        ids = msg.track_ids.tolist()
        if self.params.play_track in ids:
            return msg.samples[ids.index(self.params.play_track)]
        if self.params.play_track == -1 and ids:
            return msg.samples[int(np.argmax([self.levels.get(i, 0.0) for i in ids]))]
        return np.zeros(msg.samples.shape[1], np.float32)

    def _has_display(self) -> bool:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
            self.log.warning("window requested but there is no display; use web_port for a browser view")
            return False
        import cv2

        try:  # opencv-python-headless has no GUI: find out now, not on every frame
            cv2.namedWindow(f"Earshot {self.name}", cv2.WINDOW_NORMAL)
        except cv2.error:
            self.log.warning("window requested but this OpenCV build has no GUI (headless wheel); "
                             "install opencv-python or use web_port for a browser view")
            return False
        return True

    def _open_speaker(self) -> Any:
        try:
            from media.audio_device import AudioOutput
        except ImportError as exc:
            self.log.warning("audio out unavailable (%s); continuing without it", exc)
            return None
        device: str | int | None = self.params.audio_out_device or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        return AudioOutput(device=device, sample_rate_hz=self.params.sample_rate_hz)
