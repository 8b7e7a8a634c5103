"""The real-footage evaluation of sound localization (issue 14): the figures a new localizer is judged by.

    python launch.py eval-localizer --real-footage                    shipped ONNX + baselines, one table
    python launch.py eval-localizer --real-footage --weights FOLDER   a training run's localizer_supervised.pt
    python launch.py eval-localizer --real-footage --split validation the validation identities (model choice)

Needs ../shared/data/video/real (exit 2 without it). Three parts, all on footage never trained or tuned on:

1. **One speaker.** Every clip of the held-out test identities of ``voxceleb/`` (``TEST_IDS`` of
   `lab.real_faces.face_tracks`) and every clip of ``talking/``. Per frame the speaker's face box is
   CenterFace's (`engines.faces.detector`, 640 px, one face followed from frame to frame as
   `face_tracks.choose_face` does), and speech comes from `voice_activity` on the clip's own audio.
   Score: the map's peak (bicubic upsampling to the frame, `localizer_real_video.peak_xy`) inside the
   box, in % of the speech frames where a face was found. Goal ≥ 90 %.
2. **Two visible people, one speaks.** `composite_specs`: pairs of clips of two *different* held-out
   identities (one of each test identity), drawn from a seed; each pair gives four composites
   (`compose`): both orders side by side, and either person speaking. The audio is the speaker's own
   track only; the other face is its own silent video. Scored per 1 s window (`WINDOW_S`) in which the
   speaker talks (at least half its frames are speech frames with both faces found): a hit when the
   peak is on the speaker's box in more than half of those frames. The same frames are scored with
   each person speaking, so an audio-blind map scores about 50 % at best (not exactly: the two
   speakers' speech frames differ). Goal ≥ 80 %. The composites are rebuilt from the sources
   (deterministic) and also written once, as MP4 plus a JSON sidecar, under
   ``out/localization/real_footage/composites/<split>-seed<seed>``.
3. **Non-speech sounding scenes.** ``sounding/``: boxes drawn by hand by this project
   (``labels/sounding_boxes.json``) every 0.5 s. cIoU@0.5 and AUC under the LVS protocol
   (`localization_metrics`), on the labelled frames whose last second is audible (`audible`).

Rows: the model under test, the centre prior, the face channel alone (the frozen trunk's CenterFace
heatmap at 224², no audio: `diagnose_localizer`'s row), and for part 2 a random face per window. Then the
speaking face (`engines/localization/speaking_face.py`, section "the speaking face" below): the live lip
front end on the scored frames themselves, the sync audio encoder on the clip's audio, `SpeakingFace`
replayed causally frame by frame (its decision at a frame hears the sound up to that frame's time, each 40 ms
group with its 0.2 s look-ahead, so live it is ready ~0.24 s later). "model + lip sync (fused)" scores
`speaking_face.fuse(model map, speaking face's box)`, the front end's own box; "lip sync alone" the box's
centre, the centre prior where no face is chosen. Under the table, the speaking face's decisions: which face
it picks in the composites' windows and the one-speaker speech frames, and how often it picks any face
where nobody speaks (no speech in the last second of a one-speaker clip; the sounding scenes).
`SpeakingFaceConfig` is chosen on the validation split (`lab/localization/speaking_face_tuning.py`).

Voice activity (`voice_activity`), stated once: per video frame, the energy of the 300–3400 Hz band
of the audio in that frame's interval; speech where it is ≥ ``VAD_MARGIN_DB`` (10 dB) above the clip's
noise floor (its 10th percentile of frame energies) and ≥ −55 dBFS; runs shorter than 80 ms are
dropped, and each run is held 200 ms after it ends (hangover, so the stops between words count).

Reading the table. One-speaker cells give the figure pooled over frames, then the mean of the clips'
figures in brackets (the 60 s EDTalk clip is a third of talking/'s frames). VoxCeleb crops centre the
face, so there the centre prior and the face channel score 100 %: that column only says a map does not
leave the face; the two-people composites are what separate a sound localizer from a face prior. The
sounding boxes are small (median binarisation marks half the frame), so the protocol's ceiling row
bounds cIoU there; the pointing figure (peak inside a box) is given beside it. Composites only pair the
two voxceleb test identities, so one person never appears twice in a frame (talking/ holds repeats).

Maps, boxes and speech masks are cached per clip under ``out/localization/real_footage/`` (maps keyed
by a hash of the model files; lip and sync-audio embeddings under ``lipsync/<hash of the detector, mesh,
lip encoder and sync audio files>``), so a second run only computes what changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16000
REPO = Path(__file__).resolve().parents[2]
LABELS = Path(__file__).resolve().parent / "labels" / "sounding_boxes.json"
CACHE = REPO / "out" / "localization" / "real_footage"

# -- voice activity ----------------------------------------------------------------------------
VAD_BAND_HZ = (300.0, 3400.0)
VAD_FLOOR_PERCENTILE = 10.0
VAD_MARGIN_DB = 10.0
VAD_MIN_DBFS = -55.0
VAD_MIN_RUN_S = 0.08
VAD_HANGOVER_S = 0.2

# -- two people --------------------------------------------------------------------------------
WINDOW_S = 1.0
COMPOSITE_HEIGHT = 224
COMPOSITE_PAIRS = 20
COMPOSITE_SEED = 0

# -- sounding scenes: a labelled frame is scored when its last second is within this of the clip's
#    loudest second (the shaver is switched off for a few seconds; the kittens pause)
AUDIBLE_WITHIN_DB = 20.0

METHODS = ("model", "centre prior", "face channel alone")
#: rows added by the speaking face (lip sync, `engines/localization/speaking_face.py`; section below)
LIP_SYNC_METHODS = ("model + lip sync (fused)", "lip sync alone (else centre prior)")
#: silence appended after a clip's audio so the sync encoder's last groups hear their 0.2 s look-ahead
#: (touches only the last 0.3 s of a clip, never a scored 1 s window's decision before it)
SYNC_TAIL_S = 0.3


# ============================================================================ voice activity


def band_energy_db(audio: np.ndarray, fps: float, n_frames: int, sr: int = SAMPLE_RATE,
                   band: tuple[float, float] = VAD_BAND_HZ) -> np.ndarray:
    """(n_frames,) dB energy of the ``band`` part of each video frame's audio interval [t/fps, (t+1)/fps)."""
    x = np.asarray(audio, np.float64)
    need = int(round(n_frames * sr / fps))
    x = np.pad(x, (0, max(0, need - len(x))))[:need]
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    y = np.fft.irfft(np.where((freqs >= band[0]) & (freqs <= band[1]), spec, 0), n=len(x))
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(int)
    power = np.array([np.mean(y[a:b] ** 2) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    return 10 * np.log10(power + 1e-12)


def voice_activity(audio: np.ndarray, fps: float, n_frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames,) bool: speech frames by the rule in the module docstring."""
    energy = band_energy_db(audio, fps, n_frames, sr)
    floor = np.percentile(energy, VAD_FLOOR_PERCENTILE)
    raw = (energy >= floor + VAD_MARGIN_DB) & (energy >= VAD_MIN_DBFS)
    min_run = max(1, int(round(VAD_MIN_RUN_S * fps)))
    hang = int(round(VAD_HANGOVER_S * fps))
    out = np.zeros(n_frames, bool)
    for start, stop in runs(raw):
        if stop - start >= min_run:
            out[start:min(n_frames, stop + hang)] = True
    return out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[::2].tolist(), d[1::2].tolist()))


# ============================================================================ decoding


def clip_audio(path: Path) -> tuple[np.ndarray, float]:
    """(16 kHz mono float32 audio with sample 0 at the first video frame's time, fps); as
    `face_tracks.decode` aligns it, without holding the frames."""
    import av

    from media.av_io import audio_from

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        first = next(container.decode(video=0))
        first_pts = float(first.time or 0.0)
    audio = audio_from(path, first_pts, SAMPLE_RATE)  # media.av_io: the same alignment as face_tracks
    return audio, fps


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """BGR frames one at a time (a 20 s 1080×1920 clip would take 3 GB held whole)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def fit_audio(audio: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    want = int(round(n_frames / fps * SAMPLE_RATE))
    return np.pad(audio, (0, max(0, want - len(audio))))[:want]


# ============================================================================ maps


def model_key(weights: Path | None = None) -> str:
    """Cache key of the model under test: the shipped ONNX graphs, or a training run's .pt file."""
    h = hashlib.sha256()
    if weights is None:
        from engines.models import WEIGHTS_DIR

        files = [WEIGHTS_DIR / f"localizer_{p}.onnx" for p in ("visual", "audio", "fusion")]
        prefix = "onnx"
    else:
        from engines.localization.shipped_localizer import SHIPPED_MODE, weights_path

        files = [weights_path(SHIPPED_MODE, weights)]
        prefix = "torch"
    for f in files:
        h.update(f.read_bytes())
    return f"{prefix}-{h.hexdigest()[:12]}"


class LogmelWindows:
    """`window_logmel(audio[:end])` for every frame of one clip, from one STFT of the whole clip where
    the window start falls on the hop grid (25 fps at 16 kHz: every frame), else computed directly.
    The STFT frames are not centred, so a window's frames are rows of the whole clip's: same numbers."""

    def __init__(self, audio: np.ndarray) -> None:
        from engines.localization.localizer_inputs import STFT, WINDOW_SAMPLES

        self.audio = np.asarray(audio, np.float32)
        self.hop, self.window = STFT.hop_length, WINDOW_SAMPLES
        self._all: np.ndarray | None = None

    def __call__(self, end: int) -> np.ndarray:
        from engines.dsp import log_mel, stft
        from engines.localization.localizer_inputs import STFT, WINDOW_FRAMES, window_logmel

        if end > len(self.audio):  # video longer than its audio: silence after the end
            self.audio = np.pad(self.audio, (0, end - len(self.audio)))
            self._all = None
        if end % self.hop:
            return window_logmel(self.audio[:end])
        if self._all is None:
            padded = np.concatenate([np.zeros(self.window, np.float32), self.audio])
            self._all = log_mel(stft(padded, STFT), STFT.mel_filterbank)
        k = end // self.hop
        return self._all[k:k + WINDOW_FRAMES]


class MapRunner:
    """Per frame, the model's unclipped cosine map (14×14).

    The model runs as the live nodes run it (frame + previous frame at 224², the second of audio up
    to the end of the frame): the shipped ONNX graphs through `engines.loader`, or a torch checkpoint.
    """

    def __init__(self, weights: Path | None = None, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.torch_model = None
        if weights is not None:
            from engines.localization.localizer_model import Checkpoint
            from engines.localization.shipped_localizer import SHIPPED_MODE, weights_path

            self.torch_model = Checkpoint.load(weights_path(SHIPPED_MODE, weights)).model()
        else:
            from engines.loader import load

            self.visual, self.audio, self.fusion = (load(f"localizer_{p}", backend="onnxruntime", threads=threads)
                                                    for p in ("visual", "audio", "fusion"))

    def __call__(self, image: np.ndarray, previous: np.ndarray, logmel: np.ndarray) -> np.ndarray:
        """``image``/``previous``: 224² BGR uint8 (`resize_frame`); ``logmel``: (97, 80) window."""
        x = image.transpose(2, 0, 1)[None].astype(np.float32)
        p = previous.transpose(2, 0, 1)[None].astype(np.float32)
        if self.torch_model is not None:
            import torch

            with torch.inference_mode():
                return self.torch_model(torch.from_numpy(x), torch.from_numpy(p),
                                        torch.from_numpy(logmel[None]))["cosine"][0].numpy()
        features = self.visual.run({"image": x, "previous": p})["features"]
        embedding = self.audio.run({"logmel": logmel[None]})["embedding"]
        return self.fusion.run({"features": features, "embedding": embedding})["cosine"][0]


class FaceEngine:
    """CenterFace (`engines.faces.detector`, ONNX Runtime): face boxes at up to 640 px, and the face
    channel baseline, i.e. the localizer trunk's face channel (`face_trunk.FACE_HEATMAP`, CenterFace's
    heatmap of the 224² frame max-pooled ×4 to 14×14), with no trained layer and no audio. A 224²
    frame needs one network run for both."""

    def __init__(self, threads: int = 1) -> None:
        from engines.faces.detector import FaceDetector

        self.detector = FaceDetector(max_side_px=640, num_threads=threads)

    def _run(self, bgr: np.ndarray) -> tuple[dict, tuple[int, int, int, int]]:
        import cv2

        from engines.faces.detector import INPUT_NAME, input_size

        h, w = bgr.shape[:2]
        in_h, in_w = input_size(h, w, self.detector.max_side_px)
        blob = cv2.dnn.blobFromImage(bgr, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
        return self.detector.engine.run({INPUT_NAME: blob}), (w, h, in_w, in_h)

    def _boxes(self, out: dict, geometry: tuple[int, int, int, int]) -> np.ndarray:
        from engines.faces.detector import OUTPUTS

        w, h, in_w, in_h = geometry
        heat, size, offset, lms = (out[name] for name in OUTPUTS)
        return self.detector._decode(heat[0, 0], size[0], offset[0], lms[0], in_w / w, in_h / h, in_w, in_h).boxes

    @staticmethod
    def _channel(out: dict) -> np.ndarray:
        from engines.localization.face_trunk import FACE_HEATMAP, HEATMAP_POOL

        heat = out[FACE_HEATMAP][0, 0]
        g = heat.shape[0] // HEATMAP_POOL
        return heat[:g * HEATMAP_POOL, :g * HEATMAP_POOL].reshape(g, HEATMAP_POOL, g, HEATMAP_POOL).max(axis=(1, 3))

    def channel(self, image224: np.ndarray) -> np.ndarray:
        return self._channel(self._run(image224)[0])

    def channel_and_boxes(self, frame: np.ndarray, image224: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, geometry = self._run(frame)
        if geometry[2:] == (image224.shape[1], image224.shape[0]) and frame.shape == image224.shape:
            return self._channel(out), self._boxes(out, geometry)
        return self.channel(image224), self._boxes(out, geometry)


def centre_map() -> np.ndarray:
    from lab.localization.localization_baselines import centre_prior

    return centre_prior()


# ============================================================================ part 1: one speaker


def one_speaker_clips(split: str = "test") -> dict[str, list[Path]]:
    """Group name → clips. test: the test identities' voxceleb clips and talking/; validation: the
    validation identities only (talking/ and sounding/ are test footage)."""
    from lab.corpus.data_paths import require_data
    from lab.real_faces.face_tracks import TEST_IDS, VALIDATION_IDS

    root = require_data("video", "real")
    ids = TEST_IDS if split == "test" else VALIDATION_IDS
    groups = {"voxceleb": [p for i in ids for p in sorted(require_data("video", "real", "voxceleb", i).glob("*.mp4"))]}
    if split == "test":
        groups["talking"] = sorted(p for p in (root / "talking").iterdir() if p.suffix in (".mp4", ".mpg"))
    return groups


def clip_id(path: Path) -> str:
    return f"{path.parent.name}__{path.stem}"


def track_boxes(frame_boxes: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(n, 4) the speaker's box per frame, NaN where no face was found: the detection overlapping the
    previous box, else the largest central one (`face_tracks.choose_face`); no hold across misses."""
    from lab.real_faces.face_tracks import choose_face

    out = np.full((len(frame_boxes), 4), np.nan, np.float32)
    previous = None
    for t, boxes in enumerate(frame_boxes):
        k = choose_face(boxes, previous, shape)
        if k >= 0:
            out[t] = previous = boxes[k]
    return out


def clip_record(path: Path, runner: MapRunner | None, faces: FaceEngine, key: str) -> dict:
    """Cached per clip: truth (speaker box, speech, size, fps, face channel) and the model's maps
    (``runner`` None: truth only, no "model" key; the lip-sync tuning needs no map)."""
    from engines.localization.localizer_inputs import resize_frame

    truth_path = CACHE / "truth" / f"{clip_id(path)}.npz"
    maps_path = CACHE / "maps" / key / f"{clip_id(path)}.npz"
    truth = dict(np.load(truth_path)) if truth_path.exists() else None
    maps = dict(np.load(maps_path)) if maps_path.exists() else None
    if runner is None and maps is None:
        maps = {}
    if truth is None or maps is None:
        audio, fps = clip_audio(path)
        windows = LogmelWindows(audio)
        cos, face, boxes, previous, shape = [], [], [], None, (0, 0)
        for t, frame in enumerate(video_frames(path)):
            shape = frame.shape[:2]
            image = resize_frame(frame)
            if maps is None:
                cos.append(runner(image, image if previous is None else previous,
                                  windows(int(round((t + 1) / fps * SAMPLE_RATE)))))
            if truth is None:
                f, b = faces.channel_and_boxes(frame, image)
                face.append(f)
                boxes.append(b)
            previous = image
        if truth is None:
            n = len(face)
            truth = {"box": track_boxes(boxes, shape), "speech": voice_activity(fit_audio(audio, n, fps), fps, n),
                     "size": np.array([shape[1], shape[0]]), "fps": np.float64(fps),
                     "face": np.stack(face).astype(np.float16)}
            _save(truth_path, truth)
        if maps is None:
            maps = {"model": np.stack(cos).astype(np.float32)}
            _save(maps_path, maps)
    return {**truth, **({"model": maps["model"]} if "model" in maps else {})}


def _save(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def one_speaker_hits(rec: dict) -> dict[str, np.ndarray]:
    """Per method, over the speech frames with a face: is the peak inside the speaker's box?"""
    from lab.localization.localizer_real_video import inside, peak_xy

    w, h = (int(v) for v in rec["size"])
    box = rec["box"]
    sel = rec["speech"] & ~np.isnan(box[:, 0])
    centre = peak_xy(centre_map(), w, h)
    out = {}
    for name in methods_of(rec):
        out[name] = np.asarray([inside(method_peak(rec, name, t, w, h, centre), box[t])
                                for t in np.flatnonzero(sel)], bool)
    return out


def methods_of(rec: dict) -> tuple[str, ...]:
    return (*METHODS, *LIP_SYNC_METHODS) if "sync_box" in rec else METHODS


def method_peak(rec: dict, name: str, t: int, w: int, h: int, centre: tuple[int, int]) -> tuple[int, int]:
    """(x, y) frame pixels of method ``name``'s peak at frame ``t`` of a record.

    The lip-sync rows: ``rec["sync_box"][t]`` is the speaking face's box (NaN: none chosen). "model + lip
    sync" is `speaking_face.fuse` of the model's map with that box, peak taken as for the model; "lip sync
    alone" is the box's centre, and the centre prior's peak where no face is chosen (so it gets no credit
    there: on a composite the centre lies between the two faces)."""
    from lab.localization.localizer_real_video import peak_xy

    if name == "centre prior":
        return centre
    if name in ("model", "face channel alone"):
        return peak_xy(np.asarray(rec["model" if name == "model" else "face"][t], np.float32), w, h)
    box = rec["sync_box"][t]
    chosen = not np.isnan(box[0])
    if name == LIP_SYNC_METHODS[1]:
        return (int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)) if chosen else centre
    from engines.localization.speaking_face import fuse

    return peak_xy(fuse(np.asarray(rec["model"][t], np.float32), box if chosen else None, (w, h)), w, h)


# ============================================================================ part 2: two people


@dataclass(frozen=True)
class CompositeSpec:
    """Two source clips side by side; ``speaker`` 0 = the left one's audio, 1 = the right one's."""

    index: int
    left: Path
    right: Path
    speaker: int

    @property
    def name(self) -> str:
        return f"c{self.index:03d}"


def composite_specs(split: str = "test", pairs: int = COMPOSITE_PAIRS,
                    seed: int = COMPOSITE_SEED) -> list[CompositeSpec]:
    """``pairs`` (clip of identity A, clip of identity B) drawn without repeat from a seed, each as four
    composites: A left / B right and B left / A right, each with A speaking and with B speaking."""
    from lab.corpus.data_paths import require_data
    from lab.real_faces.face_tracks import TEST_IDS, VALIDATION_IDS

    a_id, b_id = TEST_IDS if split == "test" else VALIDATION_IDS
    a = sorted(require_data("video", "real", "voxceleb", a_id).glob("*.mp4"))
    b = sorted(require_data("video", "real", "voxceleb", b_id).glob("*.mp4"))
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(a) * len(b))[:pairs]
    out = []
    for k, c in enumerate(chosen):
        x, y = a[c // len(b)], b[c % len(b)]
        for j, (left, right, speaker) in enumerate(((x, y, 0), (x, y, 1), (y, x, 1), (y, x, 0))):
            out.append(CompositeSpec(4 * k + j, left, right, speaker))
    return out


def layout(left_hw: tuple[int, int], right_hw: tuple[int, int], height: int = COMPOSITE_HEIGHT
           ) -> tuple[tuple[float, float], tuple[int, int], int]:
    """Each source scaled to ``height`` (aspect kept) and put side by side: (scales, x offsets, width)."""
    s = (height / left_hw[0], height / right_hw[0])
    widths = (int(round(left_hw[1] * s[0])), int(round(right_hw[1] * s[1])))
    return s, (0, widths[0]), widths[0] + widths[1]


def map_box(box: np.ndarray, scale: float, dx: int) -> np.ndarray:
    """A source box (x1, y1, x2, y2) in composite pixels; NaN stays NaN."""
    return np.asarray(box, np.float32) * scale + np.array([dx, 0, dx, 0], np.float32)


@dataclass
class Composite:
    frames: list[np.ndarray]  # BGR, height × width
    audio: np.ndarray         # the speaker's own audio, 16 kHz
    fps: float
    boxes: np.ndarray         # (n, 2, 4): left face, right face, composite pixels, NaN if not found
    speech: np.ndarray        # (n,) the speaker's speech frames
    speaker: int


def compose(left: list[np.ndarray], right: list[np.ndarray], left_boxes: np.ndarray, right_boxes: np.ndarray,
            speaker_audio: np.ndarray, speaker_speech: np.ndarray, speaker: int, fps: float,
            height: int = COMPOSITE_HEIGHT) -> Composite:
    """Side by side, as long as the shorter clip; audio and speech mask are the speaker's own."""
    import cv2

    n = min(len(left), len(right))
    scales, offsets, width = layout(left[0].shape[:2], right[0].shape[:2], height)
    frames = []
    for t in range(n):
        parts = [cv2.resize(f[t], (int(round(f[t].shape[1] * s)), height), interpolation=cv2.INTER_AREA)
                 if f[t].shape[0] != height else f[t] for f, s in ((left, scales[0]), (right, scales[1]))]
        frames.append(np.ascontiguousarray(np.hstack(parts)[:, :width]))
    boxes = np.stack([np.stack([map_box(bx[t], s, dx) for t in range(n)])
                      for bx, s, dx in ((left_boxes, scales[0], offsets[0]), (right_boxes, scales[1], offsets[1]))],
                     axis=1)
    return Composite(frames, fit_audio(speaker_audio, n, fps), fps, boxes, np.asarray(speaker_speech[:n], bool),
                     speaker)


def load_source(path: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    audio, fps = clip_audio(path)
    frames = list(video_frames(path))
    return frames, fit_audio(audio, len(frames), fps), fps


def build_composite(spec: CompositeSpec, truth: dict[Path, dict]) -> Composite:
    (lf, la, fps), (rf, ra, _) = load_source(spec.left), load_source(spec.right)
    speaking = spec.left if spec.speaker == 0 else spec.right
    return compose(lf, rf, truth[spec.left]["box"], truth[spec.right]["box"], la if spec.speaker == 0 else ra,
                   truth[speaking]["speech"], spec.speaker, fps)


def write_composite(spec: CompositeSpec, comp: Composite, folder: Path) -> None:
    """The composite as MP4 (H.264 + AAC, viewable, `launch.py --input`-able) + JSON sidecar."""
    from media.writers import Mp4Writer

    h, w = comp.frames[0].shape[:2]
    with Mp4Writer(folder / f"{spec.name}.mp4", w, h, comp.fps, crf=18, threads=1) as writer:
        for f in comp.frames:
            writer.write_frame(f)
        writer.write_audio(comp.audio)
    side = {"left": str(spec.left.relative_to(spec.left.parents[2])),
            "right": str(spec.right.relative_to(spec.right.parents[2])),
            "speaking": "left" if spec.speaker == 0 else "right", "fps": comp.fps, "size": [w, h],
            "note": "built by lab/localization/real_footage.py (compose); audio = the speaking clip's own audio only",
            "boxes_left": [None if np.isnan(b[0]) else [round(float(v), 1) for v in b] for b in comp.boxes[:, 0]],
            "boxes_right": [None if np.isnan(b[0]) else [round(float(v), 1) for v in b] for b in comp.boxes[:, 1]],
            "speech": comp.speech.astype(int).tolist()}
    (folder / f"{spec.name}.json").write_text(json.dumps(side) + "\n")


def composite_record(spec: CompositeSpec, truth: dict[Path, dict], runner: MapRunner | None, faces: FaceEngine,
                     key: str, tag: str) -> dict:
    """Cached per composite: the MP4 + JSON (model-independent), the face channel, the model's maps
    (``runner`` None: none, no "model" key). ``tag`` names the set (split and seed: composite ``c000`` of
    another seed is another video)."""
    from engines.localization.localizer_inputs import resize_frame

    folder = CACHE / "composites" / tag
    maps_path = CACHE / "maps" / key / "composites" / tag / f"{spec.name}.npz"
    face_path = folder / f"{spec.name}.face.npz"
    comp = None
    if not (folder / f"{spec.name}.json").exists():
        comp = build_composite(spec, truth)
        folder.mkdir(parents=True, exist_ok=True)
        write_composite(spec, comp, folder)
    maps = dict(np.load(maps_path)) if maps_path.exists() else ({} if runner is None else None)
    face = dict(np.load(face_path)) if face_path.exists() else None
    if maps is None or face is None:
        comp = comp or build_composite(spec, truth)
        windows = LogmelWindows(comp.audio)
        cos, fc, previous = [], [], None
        for t, frame in enumerate(comp.frames):
            image = resize_frame(frame)
            if maps is None:
                cos.append(runner(image, image if previous is None else previous,
                                  windows(int(round((t + 1) / comp.fps * SAMPLE_RATE)))))
            if face is None:
                fc.append(faces.channel(image))
            previous = image
        if maps is None:
            maps = {"model": np.stack(cos).astype(np.float32)}
            _save(maps_path, maps)
        if face is None:
            face = {"face": np.stack(fc).astype(np.float16)}
            _save(face_path, face)
    side = json.loads((folder / f"{spec.name}.json").read_text())
    boxes = np.array([[[np.nan] * 4 if b is None else b for b in side[k]] for k in ("boxes_left", "boxes_right")],
                     np.float32).transpose(1, 0, 2)
    return {**({"model": maps["model"]} if "model" in maps else {}), "face": face["face"], "boxes": boxes,
            "speech": np.array(side["speech"], bool), "speaker": 0 if side["speaking"] == "left" else 1,
            "size": tuple(side["size"]), "fps": side["fps"]}


def scored_windows(rec: dict) -> Iterator[np.ndarray]:
    """The frames scored of each 1 s window of a composite that counts (the rule in the module docstring)."""
    n = len(rec["speech"])
    per = max(1, int(round(WINDOW_S * rec["fps"])))
    ok = rec["speech"] & ~np.isnan(rec["boxes"][:, :, 0]).any(axis=1)
    for start in range(0, n - per + 1, per):
        frames = np.arange(start, start + per)[ok[start:start + per]]
        if len(frames) * 2 >= per:
            yield frames


def window_scores(rec: dict, rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Per method: (windows on the speaker, windows on the silent face, windows scored). With a
    ``sync_box`` in ``rec``, also the lip-sync rows (`method_peak`)."""
    from lab.localization.localizer_real_video import inside, peak_xy

    w, h = rec["size"]
    centre = peak_xy(centre_map(), w, h)
    out = {m: [0, 0, 0] for m in (*methods_of(rec), "random face")}
    spk = rec["speaker"]
    for frames in scored_windows(rec):
        for name in methods_of(rec):
            on = np.zeros(2, int)
            for t in frames:
                p = method_peak(rec, name, t, w, h, centre)
                on += [inside(p, rec["boxes"][t, k]) for k in (0, 1)]
            out[name][0] += int(on[spk] * 2 > len(frames))
            out[name][1] += int(on[1 - spk] * 2 > len(frames))
            out[name][2] += 1
        pick = int(rng.integers(2))
        out["random face"][0] += int(pick == spk)
        out["random face"][1] += int(pick != spk)
        out["random face"][2] += 1
    return {k: tuple(v) for k, v in out.items()}


# ============================================================================ part 3: sounding scenes


def load_labels(path: Path = LABELS) -> list[dict]:
    return json.loads(path.read_text())["clips"]


def audible(audio: np.ndarray, fps: float, frames: list[int], n_frames: int) -> np.ndarray:
    """Per labelled frame: is the second of audio before its end within ``AUDIBLE_WITHIN_DB`` of the
    clip's loudest second?"""
    def window_db(t: int) -> float:
        end = int(round((t + 1) / fps * SAMPLE_RATE))
        x = audio[max(0, end - SAMPLE_RATE):end].astype(np.float64)
        return 10 * np.log10(np.mean(x ** 2) + 1e-12) if len(x) else -120.0

    loudest = max(window_db(t) for t in range(n_frames))
    return np.array([window_db(t) >= loudest - AUDIBLE_WITHIN_DB for t in frames])


def sounding_record(clip: dict, runner: MapRunner, faces: FaceEngine, key: str) -> dict:
    """Maps at the labelled frames (previous frame and audio as the live graph has them), cached."""
    from lab.corpus.data_paths import require_data
    from lab.localization.localization_samples import box_map
    from engines.localization.localizer_inputs import resize_frame

    path = require_data("video", "real", "sounding", clip["clip"])
    wanted = [f["frame"] for f in clip["frames"]]
    cache = CACHE / "maps" / key / "sounding" / f"{path.stem}.npz"
    audio, fps = clip_audio(path)
    if cache.exists():
        maps = dict(np.load(cache))
    else:
        keep = set(wanted) | {max(0, f - 1) for f in wanted}
        images, n = {}, 0
        for t, frame in enumerate(video_frames(path)):
            n += 1
            if t in keep:
                images[t] = resize_frame(frame)
        windows = LogmelWindows(audio)
        cos = [runner(images[t], images[max(0, t - 1)], windows(int(round((t + 1) / fps * SAMPLE_RATE))))
               for t in wanted]
        face = [faces.channel(images[t]) for t in wanted]
        maps = {"model": np.stack(cos), "face": np.stack(face).astype(np.float32), "n": np.int64(n)}
        _save(cache, maps)
    n = int(maps["n"])
    gts = np.stack([box_map(np.array([b["box"] for b in f["boxes"]], np.float32), clip["width"], clip["height"])
                    for f in clip["frames"]])
    return {**maps, "gt": gts, "audible": audible(fit_audio(audio, n, fps), fps, wanted, n)}


# ============================================================================ the speaking face (lip sync)
#
# The live front end (`MeshLipFrontEnd`: CenterFace at its live 320 px → tracker → face mesh → lip encoder)
# runs frame by frame on the very frames scored above (a composite's own canvas, a clip's own frames), the
# sync audio encoder (`SyncAudio`) on the clip's audio as the stft node would stream it, and `SpeakingFace`
# replays the stream: at frame t (time t/fps) it has the lips of frames ≤ t and the audio groups whose centre
# is ≤ t/fps + ``audio_delay_s`` (default 0: groups up to the frame's own time). Each such group's embedding
# needs 0.2 s of audio after its centre (the encoder's look-ahead; 0.235 s counting the STFT window), so live
# the same decision is ready ~0.24 s after the frame was captured: the rows score a display that waits for
# it (the decision lags the sound by ~0.24 s). ``audio_delay_s`` = −0.24 scores the decision as it stands at
# the frame's capture time instead.


SYNC_FILES = ("lip_encoder.onnx", "sync_audio.onnx")


def sync_files(sync_dir: Path | None = None) -> tuple[Path, Path]:
    """(lip encoder, sync audio) ONNX files: the shipped pair, or a training run's export in ``sync_dir``
    (`lab.real_faces.train_sync --run NAME --export-onnx`); FileNotFoundError names what is missing."""
    if sync_dir is None:
        from engines.models import WEIGHTS_DIR

        sync_dir = WEIGHTS_DIR
    files = tuple(Path(sync_dir) / f for f in SYNC_FILES)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"lip-sync pair missing: {', '.join(missing)}")
    return files


def lip_sync_key(sync_dir: Path | list[Path] | None = None) -> str:
    """Cache key of the speaking-face inputs: the face detector, mesh, lip encoder and sync audio files
    (``sync_dir``: that folder's lip_encoder.onnx and sync_audio.onnx instead of the shipped ones; a list of
    folders: an ensemble, whose members are cached each under its own key)."""
    if isinstance(sync_dir, list):
        return "+".join(lip_sync_key(d) for d in sync_dir)
    from engines.faces.detector import MODEL_PATH as DETECTOR
    from engines.faces.face_mesh import MODEL_PATH as MESH

    h = hashlib.sha256()
    for f in (DETECTOR, MESH, *sync_files(sync_dir)):
        h.update(f.read_bytes())
    return f"lipsync-{h.hexdigest()[:12]}"


class LipSyncEngine:
    """The two halves of the lip-sync pair, as the live nodes run them (ONNX Runtime, ``threads`` each):
    the shipped ONNX, or ``sync_dir``'s lip_encoder.onnx and sync_audio.onnx (another training run)."""

    def __init__(self, threads: int = 1, sync_dir: Path | None = None) -> None:
        from engines.faces.detector import FaceDetector
        from engines.faces.face_mesh import FaceMesh
        from engines.faces.mesh_lip_front_end import MODEL_NAME
        from engines.loader import load

        encoder, sync = (MODEL_NAME, "sync_audio") if sync_dir is None else sync_files(sync_dir)
        self.detector = FaceDetector(num_threads=threads, backend="onnxruntime")
        self.mesh = FaceMesh(backend="onnxruntime", threads=threads)
        self.encoder = load(encoder, "onnxruntime", threads=threads)
        self.sync = load(sync, "onnxruntime", threads=threads)

    def lips(self, frames: Iterator[np.ndarray]) -> dict[str, np.ndarray]:
        """A fresh front end (new tracker, zero encoder state) over the frames in order; one row per
        (frame, reported track): frame index, track id, box (frame pixels), lip embedding."""
        from engines.faces.mesh_lip_front_end import LIP_EMBEDDING_DIM, MeshLipFrontEnd
        from engines.faces.tracker import FaceTracker

        front = MeshLipFrontEnd(detector=self.detector, tracker=FaceTracker(), mesh=self.mesh, encoder=self.encoder)
        rows: dict[str, list] = {"frame": [], "track": [], "box": [], "lips": []}
        n = 0
        for t, frame in enumerate(frames):
            got = front.process(frame)
            n = t + 1
            rows["frame"] += [t] * len(got.track_ids)
            rows["track"] += got.track_ids.tolist()
            rows["box"] += list(got.boxes)
            rows["lips"] += list(got.lip_features)
        return {"frame": np.asarray(rows["frame"], np.int32), "track": np.asarray(rows["track"], np.int64),
                "box": np.asarray(rows["box"], np.float32).reshape(-1, 4),
                "lips": np.asarray(rows["lips"], np.float32).reshape(-1, LIP_EMBEDDING_DIM), "n": np.int64(n)}

    def audio(self, audio: np.ndarray) -> np.ndarray:
        return sync_embeddings(self.sync, audio)


class SyncEnsemble:
    """Several lip-sync pairs (training seeds) judged as one: each face's and each group's embeddings of
    every member, each made unit length, side by side and scaled by 1/√N, so that the cosine `SpeakingFace`
    takes is the members' mean cosine. Averaging seeds is the usual cure for a model whose figure moves
    with its seed (issue 14: 63–74 % across two). Lab only: each member runs from its own cache."""

    def __init__(self, threads: int, sync_dirs: list[Path]) -> None:
        self.members = [(LipSyncEngine(threads, d), lip_sync_key(d)) for d in sync_dirs]

    @staticmethod
    def combine(parts: list[tuple[dict, np.ndarray]]) -> tuple[dict, np.ndarray]:
        from engines.localization.speaking_face import unit

        lips = dict(parts[0][0])
        for other, _ in parts[1:]:  # one detector, tracker and mesh: the same rows, only the encoders differ
            if not all(np.array_equal(lips[k], other[k]) for k in ("frame", "track")):
                raise ValueError("ensemble members saw different faces (not the same front end?)")
        scale = 1.0 / np.sqrt(len(parts))
        lips["lips"] = np.concatenate([unit(p[0]["lips"]) for p in parts], axis=1) * scale
        audio = np.concatenate([unit(p[1]) for p in parts], axis=1) * scale
        return lips, audio.astype(np.float32)


def lip_sync_engine(threads: int, sync_dir: Path | list[Path] | None) -> LipSyncEngine | SyncEnsemble:
    """The shipped pair, another run's pair, or (a list of folders) an ensemble of them."""
    return SyncEnsemble(threads, sync_dir) if isinstance(sync_dir, list) else LipSyncEngine(threads, sync_dir)


def sync_embeddings(sync_engine, audio: np.ndarray) -> np.ndarray:
    """(G, E) unit embeddings of audio groups 0 … G−1 (G = the clip's 40 ms groups), streamed through
    `SyncAudio` as the stft node's frames; ``SYNC_TAIL_S`` of silence lets the last ones out."""
    from engines.dsp import StftConfig, stft
    from engines.localization.speaking_face import GROUP_SAMPLES, SyncAudio

    x = np.concatenate([np.asarray(audio, np.float32), np.zeros(int(SYNC_TAIL_S * SAMPLE_RATE), np.float32)])
    groups = SyncAudio(sync_engine).push(stft(x, StftConfig()), 0)
    n = -(-len(audio) // GROUP_SAMPLES)
    assert [g for g, _ in groups[:n]] == list(range(n)), "SyncAudio emits every group in order"
    return np.stack([e for _, e in groups[:n]]).astype(np.float32)


def cached(path: Path, compute) -> dict[str, np.ndarray]:
    if path.exists():
        return dict(np.load(path))
    out = compute()
    _save(path, out)
    return out


def lip_sync_inputs(engine: LipSyncEngine | None, key: str, name: str, frames, audio) -> tuple[dict, np.ndarray]:
    """(lips, audio embeddings) of one clip, cached under ``lipsync/<key>/{lips,audio}/<name>``; ``frames``
    and ``audio`` are called only on a miss (a composite's canvas is rebuilt only then). ``name`` is a pair
    of names (lips, audio) when the two are shared differently (composites: one canvas, two speakers)."""
    if isinstance(engine, SyncEnsemble):
        return engine.combine([lip_sync_inputs(e, k, name, frames, audio) for e, k in engine.members])
    lips_name, audio_name = (name, name) if isinstance(name, str) else name
    lips = cached(CACHE / "lipsync" / key / "lips" / f"{lips_name}.npz", lambda: engine.lips(frames()))
    emb = cached(CACHE / "lipsync" / key / "audio" / f"{audio_name}.npz", lambda: {"audio": engine.audio(audio())})
    return lips, emb["audio"]


def sync_trace(lips: dict, audio: np.ndarray, frame_s: np.ndarray, config=None, audio_delay_s: float = 0.0
               ) -> dict[str, np.ndarray]:
    """`SpeakingFace` replayed frame by frame as the live stream feeds it (see the section's comment).

    Per frame: ``speaker`` (track id `SpeakingFace.speaker` picks, −1 none), ``box`` (that track's box in this
    frame, NaN if none or the track is not in it), and for sweeping threshold/margin without a replay:
    ``best_track``, ``best``, ``second`` (the top two mean cosines; NaN / −1 where fewer tracks are scored,
    as `speaker` treats them) with ``best_box``. Scores depend only on window_groups, min_groups and
    max_pair_ms; threshold and margin act in `decide`."""
    from engines.localization.speaking_face import GROUP_SAMPLES, SpeakingFace, SpeakingFaceConfig

    config = config or SpeakingFaceConfig()
    face = SpeakingFace(config)
    n = len(frame_s)
    starts = np.searchsorted(lips["frame"], np.arange(n + 1))
    centre_ns = np.round((np.arange(len(audio)) * GROUP_SAMPLES + GROUP_SAMPLES // 2) * 1e9 / SAMPLE_RATE
                         ).astype(np.int64)
    out = {"speaker": np.full(n, -1, np.int64), "box": np.full((n, 4), np.nan, np.float32),
           "best_track": np.full(n, -1, np.int64), "best": np.full(n, np.nan, np.float32),
           "second": np.full(n, -1.0, np.float32), "best_box": np.full((n, 4), np.nan, np.float32),
           "scored": np.zeros(n, np.int64)}
    g = 0
    for t in range(n):
        now = int(round(frame_s[t] * 1e9))
        rows = slice(starts[t], starts[t + 1])
        face.add_lips(now, lips["track"][rows], lips["lips"][rows])
        while g < len(audio) and centre_ns[g] <= now + audio_delay_s * 1e9:
            face.add_audio(int(centre_ns[g]), audio[g])
            g += 1
        scores = face.scores()
        here = dict(zip(lips["track"][rows].tolist(), lips["box"][rows]))
        tid, _ = face.speaker(scores)
        out["speaker"][t] = tid
        if tid in here:
            out["box"][t] = here[tid]
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        out["scored"][t] = len(ranked)
        if ranked:
            out["best_track"][t], out["best"][t] = ranked[0]
            if len(ranked) > 1:
                out["second"][t] = ranked[1][1]
            if ranked[0][0] in here:
                out["best_box"][t] = here[ranked[0][0]]
    return out


def decide(trace: dict[str, np.ndarray], threshold: float, margin: float, pair_margin: float = np.inf,
           pair_floor: float = -1.0) -> np.ndarray:
    """(n, 4) the speaking face's box per frame for other thresholds/margins (`SpeakingFace.speaker`'s rule
    on the trace's top two scores), NaN where none is chosen.

    ``pair_margin`` / ``pair_floor``: a rule tried in session 8 and *not* in `SpeakingFace` — where two faces or
    more are scored, the best is also chosen under the threshold when it leads the second by ``pair_margin``
    and reaches ``pair_floor``. Validation rejected it: two moving mouths under off-screen speech lead each
    other by that much too (`speaking_face_tuning`, F)."""
    best = np.nan_to_num(trace["best"], nan=-np.inf)
    gap = best - trace["second"]
    ok = (best >= threshold) & ((trace["scored"] == 1) | (gap >= margin))
    ok |= (trace["scored"] > 1) & (best >= pair_floor) & (gap >= pair_margin)
    return np.where(ok[:, None], trace["best_box"], np.nan).astype(np.float32)


def one_speaker_decisions(rec: dict, quiet_s: float = WINDOW_S) -> dict[str, int]:
    """Counts over the frames with a face: speech frames where the speaker's face / another face / no face
    is chosen (chosen box centre inside the truth box = the speaker's), and "quiet" frames (no speech frame
    in the last ``quiet_s``) where some face is chosen."""
    box, sync = rec["box"], rec["sync_box"]
    face = ~np.isnan(box[:, 0])
    chosen = ~np.isnan(sync[:, 0])
    cx, cy = (sync[:, 0] + sync[:, 2]) / 2, (sync[:, 1] + sync[:, 3]) / 2
    on = chosen & (box[:, 0] <= cx) & (cx <= box[:, 2]) & (box[:, 1] <= cy) & (cy <= box[:, 3])
    speech = rec["speech"] & face
    k = max(1, int(round(quiet_s * float(rec["fps"]))))
    recent = np.convolve(rec["speech"].astype(int), np.ones(k, int))[:len(box)] > 0
    quiet = face & ~recent
    return {"speech": int(speech.sum()), "speaker": int((on & speech).sum()),
            "other": int((chosen & ~on & speech).sum()), "none": int((~chosen & speech).sum()),
            "quiet": int(quiet.sum()), "quiet_chosen": int((chosen & quiet).sum())}


def add_lip_sync(rec: dict, lips: dict, audio: np.ndarray, config=None, audio_delay_s: float = 0.0) -> dict:
    n = len(rec["speech"])
    trace = sync_trace(lips, audio, np.arange(n) / float(rec["fps"]), config, audio_delay_s)
    return {**rec, "sync_box": trace["box"], "trace": trace}


def clip_lip_sync(path: Path, rec: dict, engine: LipSyncEngine | None, key: str) -> tuple[dict, np.ndarray]:
    n, fps = len(rec["speech"]), float(rec["fps"])
    return lip_sync_inputs(engine, key, f"clips/{clip_id(path)}", lambda: video_frames(path),
                           lambda: fit_audio(clip_audio(path)[0], n, fps))


def composite_lip_sync(spec: CompositeSpec, rec: dict, truth: dict[Path, dict], engine: LipSyncEngine | None,
                       key: str) -> tuple[dict, np.ndarray]:
    """Lips cached per canvas (left, right clips: the same for either speaker and any seed that draws the
    pair), audio per speaking clip and length (the composite's audio is that clip's, cut to the canvas)."""
    n, fps = len(rec["speech"]), float(rec["fps"])
    speaking = spec.left if spec.speaker == 0 else spec.right
    names = (f"canvas/{clip_id(spec.left)}+{clip_id(spec.right)}", f"speech/{clip_id(speaking)}-{n}f")
    return lip_sync_inputs(engine, key, names, lambda: iter(build_composite(spec, truth).frames),
                           lambda: fit_audio(clip_audio(speaking)[0], n, fps))


def sounding_lip_sync(clip: dict, rec: dict, engine: LipSyncEngine | None, key: str, config=None,
                      audio_delay_s: float = 0.0) -> np.ndarray:
    """(labelled frames, 4) the speaking face's box at each labelled frame of a sounding clip (NaN: none)."""
    from lab.corpus.data_paths import require_data

    path = require_data("video", "real", "sounding", clip["clip"])
    n = int(rec["n"])
    audio, fps = clip_audio(path)
    lips, emb = lip_sync_inputs(engine, key, f"sounding/{path.stem}", lambda: video_frames(path),
                                lambda: fit_audio(audio, n, fps))
    trace = sync_trace(lips, emb, np.arange(n) / fps, config, audio_delay_s)
    return trace["box"][[f["frame"] for f in clip["frames"]]]


# ============================================================================ the table


def evaluate(weights: Path | None = None, split: str = "test", threads: int = 1, pairs: int = COMPOSITE_PAIRS,
             seed: int = COMPOSITE_SEED, log=print, lip_sync: bool = True, sync_config=None,
             audio_delay_s: float = 0.0, sync_dir: Path | None = None) -> list[str]:
    """All three parts; returns the markdown lines of the table (raises DataMissingError without data).
    ``lip_sync``: also the speaking-face rows and their decision table (``sync_config``: a
    `SpeakingFaceConfig`, default its defaults; ``audio_delay_s``: see the lip-sync section; ``sync_dir``: a
    folder with another lip_encoder.onnx + sync_audio.onnx, default the shipped pair)."""
    from lab.localization.localization_metrics import Scores

    groups = one_speaker_clips(split)  # first: no data, no model loading
    specs = composite_specs(split, pairs, seed)
    labels = load_labels() if split == "test" else []
    if labels:
        from lab.corpus.data_paths import require_data

        require_data("video", "real", "sounding")
    key = model_key(weights)
    runner, faces = MapRunner(weights, threads), FaceEngine(threads)
    sync_key = lip_sync_key(sync_dir) if lip_sync else ""
    engine = lip_sync_engine(threads, sync_dir) if lip_sync else None
    methods = (*METHODS, *LIP_SYNC_METHODS) if lip_sync else METHODS
    decisions = {}

    def tally(name: str, counts: dict[str, int]) -> None:
        d = decisions.setdefault(name, {})
        for k, v in counts.items():
            d[k] = d.get(k, 0) + v

    # part 1
    truth: dict[Path, dict] = {}
    one: dict[str, dict[str, list[np.ndarray]]] = {}
    for group, clips in groups.items():
        one[group] = {m: [] for m in methods}
        for i, path in enumerate(clips):
            rec = clip_record(path, runner, faces, key)
            truth[path] = rec
            if lip_sync:
                rec = add_lip_sync(rec, *clip_lip_sync(path, rec, engine, sync_key), sync_config, audio_delay_s)
                tally(group, one_speaker_decisions(rec))
            for m, h in one_speaker_hits(rec).items():
                one[group][m].append(h)
            if (i + 1) % 10 == 0 or i + 1 == len(clips):
                log(f"  one speaker, {group}: {i + 1}/{len(clips)} clips")
    # part 2
    rng = np.random.default_rng(seed)
    two = {m: np.zeros(3, int) for m in (*methods, "random face")}
    for i, spec in enumerate(specs):
        rec = composite_record(spec, truth, runner, faces, key, f"{split}-seed{seed}")
        if lip_sync:
            rec = add_lip_sync(rec, *composite_lip_sync(spec, rec, truth, engine, sync_key), sync_config,
                               audio_delay_s)
        for m, v in window_scores(rec, rng).items():
            two[m] += v
        if (i + 1) % 10 == 0 or i + 1 == len(specs):
            log(f"  two people: {i + 1}/{len(specs)} composites")
    # part 3
    snd = None
    if labels:
        from engines.localization.speaking_face import face_bump, fuse

        recs = [sounding_record(c, runner, faces, key) for c in labels]
        sel = np.concatenate([r["audible"] for r in recs])
        gts = np.concatenate([r["gt"] for r in recs])[sel]
        maps = {"model": np.concatenate([r["model"] for r in recs])[sel],
                "face channel alone": np.concatenate([r["face"] for r in recs])[sel]}
        maps["centre prior"] = np.repeat(centre_map()[None], len(gts), axis=0)
        if lip_sync:
            fused, alone, chosen = [], [], []
            for c, r in zip(labels, recs):
                boxes = sounding_lip_sync(c, r, engine, sync_key, sync_config, audio_delay_s)
                wh = (c["width"], c["height"])
                for m, b in zip(r["model"], boxes):
                    some = not np.isnan(b[0])
                    fused.append(fuse(m, b if some else None, wh))
                    alone.append(face_bump(b, wh, m.shape, 1.0) if some else centre_map())
                    chosen.append(some)
            maps[LIP_SYNC_METHODS[0]], maps[LIP_SYNC_METHODS[1]] = np.stack(fused)[sel], np.stack(alone)[sel]
            decisions["sounding"] = {"frames": int(sel.sum()), "chosen": int(np.asarray(chosen)[sel].sum())}
        snd = {m: Scores.of(maps[m], gts) for m in methods}
        snd_n = (int(sel.sum()), len(sel), len(recs))

    def pct(hits: list[np.ndarray]) -> tuple[str, int]:
        """Pooled over frames (long clips weigh more), and the mean of the clips' own figures."""
        h = np.concatenate(hits) if hits else np.zeros(0, bool)
        per_clip = [x.mean() for x in hits if len(x)]
        return (f"{h.mean():.1%} ({np.mean(per_clip):.1%})" if len(h) else "n/a"), len(h)

    name_model = "shipped ONNX (supervised)" if weights is None else f"{weights} (torch)"
    head = ["method"]
    cols = {}
    labels_of = {}
    for group in one:
        n_clips = len(groups[group])
        _, n = pct(one[group]["model"])
        label = "VoxCeleb test ids" if group == "voxceleb" and split == "test" else (
            "VoxCeleb validation ids" if group == "voxceleb" else "talking/")
        labels_of[group] = label
        head.append(f"one speaker, {label}: peak on the face, % of {n} speech frames (mean of {n_clips} clips)")
        cols[group] = {m: pct(one[group][m])[0] for m in methods}
    n_win = int(two["model"][2])
    head.append(f"two people, one speaks: on the speaker / on the silent one, % of {n_win} windows "
                f"({len(specs)} composites)")
    if snd:
        head.append(f"sounding scenes: cIoU@0.5 / AUC / pointing ({snd_n[0]} of {snd_n[1]} labelled frames, "
                    f"{snd_n[2]} clips)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in (*methods, "random face"):
        row = [name_model if m == "model" else (f"{name_model} {m[len('model '):]}" if m == LIP_SYNC_METHODS[0]
                                                else m if m in LIP_SYNC_METHODS else f"baseline: {m}")]
        row += [cols[g].get(m, "—") for g in one]
        on, off, n = two[m]
        row.append(f"{on / n:.1%} / {off / n:.1%}" if n else "n/a")
        if snd:
            s = snd.get(m)
            row.append(f"{s.ciou05:.3f} / {s.auc:.3f} / {s.pointing:.3f}" if s else "—")
        lines.append("| " + " | ".join(row) + " |")
    goal = ["goal (issue 14)"] + ["≥ 90 %"] * len(one) + ["≥ 80 % on the speaker"]
    goal += ["above the baselines"] if snd else []
    lines.append("| " + " | ".join(goal) + " |")
    if snd:
        ceiling = Scores.ceiling(gts)
        lines.append("| ceiling of the LVS protocol on these boxes |" + " |" * (len(one) + 1) +
                     f" {ceiling.ciou05:.3f} / {ceiling.auc:.3f} / 1.000 |")
    if lip_sync:
        lines += ["", *decision_lines(decisions, two[LIP_SYNC_METHODS[1]], labels_of, sync_config, audio_delay_s)]
    return lines


def decision_lines(decisions: dict, two_alone: np.ndarray, labels_of: dict[str, str], config,
                   audio_delay_s: float) -> list[str]:
    """The speaking face's own decisions (which face it picks), under the table."""
    from dataclasses import asdict

    from engines.localization.speaking_face import SpeakingFaceConfig

    config = config or SpeakingFaceConfig()
    on, off, n = (int(v) for v in two_alone)
    lines = [f"Speaking-face decisions (`SpeakingFace`, {', '.join(f'{k}={v}' for k, v in asdict(config).items())}; "
             f"audio groups up to the frame's time {audio_delay_s:+.2f} s, each heard with its 0.2 s look-ahead):",
             "", "| footage | the speaking face | another face | no face |", "|---|---|---|---|",
             f"| two people: 1 s windows (majority of their frames), of {n} | {on / n:.1%} | {off / n:.1%} "
             f"(the silent one) | {(n - on - off) / n:.1%} (none or no majority) |"
             if n else "| two people | n/a | | |"]
    for group, d in decisions.items():
        if group == "sounding" or not d.get("speech"):
            continue
        k = d["speech"]
        lines.append(f"| one speaker, {labels_of[group]}: speech frames with a face, of {k} | {d['speaker'] / k:.1%} "
                     f"| {d['other'] / k:.1%} | {d['none'] / k:.1%} |")
    for group, d in decisions.items():
        if group != "sounding" and d.get("quiet"):
            lines.append(f"| one speaker, {labels_of[group]}: frames with a face and no speech in the last second, "
                         f"of {d['quiet']} | — | {d['quiet_chosen'] / d['quiet']:.1%} chosen (any face) | "
                         f"{1 - d['quiet_chosen'] / d['quiet']:.1%} |")
    if "sounding" in decisions:
        d = decisions["sounding"]
        lines.append(f"| sounding scenes (no speech): scored labelled frames, of {d['frames']} | — | "
                     f"{d['chosen'] / d['frames']:.1%} chosen (any face) | {1 - d['chosen'] / d['frames']:.1%} |")
    return lines
