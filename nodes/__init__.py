"""Earshot's nodes: one module per node, each a short open → loop → close story.

`NODE_TYPES` maps the `type:` written in a graph YAML to "module:Class". It is the only
place that names them, so `launch.py --list-nodes` and graph validation see every node
without importing heavy libraries until a node actually runs.
"""

NODE_TYPES: dict[str, str] = {
    "renderer": "nodes.renderer:Renderer",
    "camera": "nodes.camera:Camera",
    "microphone": "nodes.microphone:Microphone",
    "stft": "nodes.stft:Stft",
    "faces": "nodes.faces:Faces",
    "separator": "nodes.separator:Separator",
    "visual_encoder": "nodes.visual_encoder:VisualEncoder",
    "audio_encoder": "nodes.audio_encoder:AudioEncoder",
    "fusion": "nodes.fusion:Fusion",
    "active_speaker": "nodes.active_speaker:ActiveSpeaker",
    "replay": "nodes.replay:Replay",
}
