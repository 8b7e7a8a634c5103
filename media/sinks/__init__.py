"""Sinks: where the renderer's drawn video and audio go, one small module per output.

``sink`` holds the interface (:class:`Sink`, :class:`DrawnFrame`, track names, the stats
vocabulary) and :class:`Sinks`, several sinks used as one. ``frame_record`` is the one output
meant for programs rather than people: a JSON line per drawn frame (peak, faces, speaking face).
"""

from media.sinks.sink import MIXTURE, DrawnFrame, Sink, Sinks, seconds, voice_track
from media.sinks.frame_record import FrameRecordSink
from media.sinks.mp4 import Mp4Sink
from media.sinks.speaker import SpeakerSink
from media.sinks.virtual_mic import VirtualMicSink
from media.sinks.wav import WavSink
from media.sinks.web import WebSink
from media.sinks.window import WindowSink

__all__ = ["MIXTURE", "DrawnFrame", "FrameRecordSink", "Mp4Sink", "Sink", "Sinks", "SpeakerSink", "VirtualMicSink",
           "WavSink", "WebSink", "WindowSink", "seconds", "voice_track"]
