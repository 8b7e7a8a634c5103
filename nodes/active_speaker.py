"""ActiveSpeaker: which face on screen is speaking, by whose lips move with the voice heard (issue 14).

A still picture cannot tell a speaking face from a silent one beside it; lip sync can. The stft node's
complex frames go through the lip-sync audio encoder (``sync_audio``, `engines.localization.speaking_face.
SyncAudio`): one embedding per 40 ms audio group, in the space of the lip embeddings the faces node sends.
Each face's lips are paired with the audio of the same capture time and scored over the last second
(`SpeakingFace`); one decision leaves per group, about 0.2 s after its audio (the encoder's look-ahead).

Time: STFT frame j starts at stream sample 160 j, so group g (frames 4g … 4g + 3) starts at sample 640 g;
a spectrum's capture_ns dates the last sample of its last frame, which dates every sample. Training paired
video frame t (shown at t / 25 s) with group t, so a group is placed at the capture time of its *first*
sample, and the lips of the frame captured then pair with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from engines.faces.sync_audio_encoder import MEL_PER_FRAME, STFT
from engines.loader import load
from engines.localization.speaking_face import GROUP_SAMPLES, SpeakingFace, SpeakingFaceConfig, SyncAudio
from pipeline.messages import ActiveSpeaker as ActiveSpeakerMsg
from pipeline.messages import FaceTracks, Spectrogram
from pipeline.node import BadInput, Input, Node, Output

#: scoring runs over every face each 40 ms: more faces than this in one FaceTracks is refused
MAX_FACES = 32
#: the most STFT frames one message may carry (the stft node's 10 s gap fill, and some): one encoder run per 4
MAX_FRAMES = 1200
#: a jump ahead in the STFT stream up to this many frames is filled (quietly: the decisions there are weak);
#: a longer one, or a step back (the stft node restarted), starts the audio stream afresh
MAX_FILL_FRAMES = 100


class ActiveSpeaker(Node):
    """Complex STFT frames + FaceTracks (lip embeddings) → ActiveSpeaker once per 40 ms of audio."""

    @dataclass
    class Params:
        model: str = "sync_audio"
        backend: str = "auto"
        threads: int = 1
        # the scorer's settings: defaults are `SpeakingFaceConfig`'s, chosen on the validation identities
        window_groups: int = SpeakingFaceConfig.window_groups  # groups of 40 ms scored (50: the last 2 s)
        min_groups: int = SpeakingFaceConfig.min_groups        # a face needs this many paired groups to be scored
        threshold: float = SpeakingFaceConfig.threshold        # mean cosine a face must reach to be called speaking
        margin: float = SpeakingFaceConfig.margin              # ... and by how much it must beat the second-best

        def config(self) -> SpeakingFaceConfig:
            return SpeakingFaceConfig(self.window_groups, self.min_groups, self.threshold, self.margin)

        def validate(self) -> None:
            if not 1 <= self.min_groups <= self.window_groups:
                raise ValueError(f"min_groups must be in 1..window_groups ({self.window_groups}), got {self.min_groups}")

    inputs = {
        # lossless: the audio of a moment waits for the faces of that moment, so its decision sees their lips
        "spectrum": Input(Spectrogram, policy="queue", size=256, doc="complex STFT frames (stft node)",
                          waits_for=("faces",)),
        # queue: every face frame's lips count (a skipped frame is a group without a pair)
        "faces": Input(FaceTracks, policy="queue", size=64, doc="boxes, track ids, 64-d lip embeddings (faces node)"),
    }
    outputs = {"speakers": Output(ActiveSpeakerMsg, doc="scores of the faces on screen and the one speaking")}

    def open(self) -> None:
        self.engine = load(self.params.model, backend=self.params.backend, threads=self.params.threads)
        self.lip_dim = self.engine.outputs[0].shape[-1]  # the lips must be in the audio embeddings' space
        self.scorer = SpeakingFace(self.params.config())
        self.faces = FaceTracks(boxes=np.zeros((0, 4), np.float32), track_ids=np.zeros(0, np.int64),
                                lip_features=np.zeros((0, self.lip_dim), np.float32))  # none seen yet
        self.audio: SyncAudio | None = None
        self.base_frame = 0          # the stream frame SyncAudio's frame 0 is (a multiple of 4: groups stay aligned)
        self.next_frame: int | None = None
        self.speaking = Counter()    # decisions per track id (-1: none), for the closing line

    def on_message(self, port: str, msg: FaceTracks | Spectrogram) -> None:
        if port == "faces":
            (n, dims), size = msg.lip_features.shape, (msg.frame_width, msg.frame_height)
            if n > MAX_FACES or (n and (dims != self.lip_dim or not all(size))):
                raise BadInput(f"{n} faces with {dims} lip features in a {size[0]}×{size[1]} frame; takes "
                               f"≤ {MAX_FACES} faces × {self.lip_dim} in a frame of known size")
            self.scorer.add_lips(msg.capture_ns, msg.track_ids, msg.lip_features)
            self.faces = msg
            return
        geometry = (msg.kind, msg.sample_rate_hz, msg.n_fft, msg.hop_length, msg.win_length, msg.frames.shape[1])
        want = ("complex", STFT.sample_rate_hz, STFT.n_fft, STFT.hop_length, STFT.win_length, STFT.n_freqs)
        if geometry != want:
            raise BadInput(f"STFT (kind, rate, n_fft, hop, win, bins) {geometry}, the sync encoder takes {want}")
        if len(msg.frames) > MAX_FRAMES:
            raise BadInput(f"{len(msg.frames)} STFT frames in one message, limit {MAX_FRAMES}")
        self._follow_stream(msg.first_frame, len(msg.frames))
        last_sample = STFT.frame_end_sample(msg.first_frame + len(msg.frames) - 1)  # what capture_ns dates
        for group, embedding in self.audio.push(msg.frames, msg.first_frame - self.base_frame):
            first_sample = (group + self.base_frame // MEL_PER_FRAME) * GROUP_SAMPLES
            start_ns = msg.capture_ns - round((last_sample - first_sample) * 1e9 / STFT.sample_rate_hz)
            self.scorer.add_audio(start_ns, embedding)
            self._decide(start_ns)

    def _follow_stream(self, first_frame: int, n_frames: int) -> None:
        """Keep SyncAudio on one continuous stream: a short gap it fills, anything else starts it afresh."""
        if self.next_frame is not None and first_frame != self.next_frame:
            jump = first_frame - self.next_frame
            self.count("gap_frames", max(jump, 0))
            if not 0 < jump <= MAX_FILL_FRAMES:
                self.count("audio_restarts")
                self.audio = None
        if self.audio is None:  # the first message, or a restart: begin at the group this frame falls in
            self.audio = SyncAudio(self.engine)
            self.base_frame = first_frame - first_frame % MEL_PER_FRAME
        self.next_frame = first_frame + n_frames

    def _decide(self, capture_ns: int) -> None:
        """Score the faces on screen (the newest FaceTracks) and name the speaker among them."""
        scores = self.scorer.scores()
        rows = [k for k, t in enumerate(self.faces.track_ids.tolist()) if t in scores]
        ids = self.faces.track_ids[rows]
        values = np.clip([scores[t] for t in ids.tolist()], -1.0, 1.0).astype(np.float32)
        speaking, score = self.scorer.speaker(dict(zip(ids.tolist(), values.tolist())))
        self.speaking[speaking] += 1
        self.send("speakers", ActiveSpeakerMsg(track_ids=ids, scores=values, boxes=self.faces.boxes[rows],
                                               speaking_track_id=speaking, speaking_score=score,
                                               frame_width=self.faces.frame_width,
                                               frame_height=self.faces.frame_height, capture_ns=capture_ns))

    def summary(self) -> str:
        decisions, named = sum(self.speaking.values()), sum(n for t, n in self.speaking.items() if t >= 0)
        faces = "".join(f", track {t} in {n}" for t, n in self.speaking.most_common() if t >= 0)
        return f"{decisions} decisions (one per 40 ms of audio); a face speaking in {named}{faces}"

    def close(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
