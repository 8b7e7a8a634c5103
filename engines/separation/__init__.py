"""Cocktail-party voice isolation: the causal audio-visual separator the live node runs.

crn_model.py           the network (a causal CRN, one complex mask per source), its checkpoints
separator_model.py     the earlier GRU network ("Looking to Listen" made causal) and the shared mask helpers
streaming_separator.py the live engine: STFT frames + per-face lip features → per-face audio, state per face
two_voice_blend.py     two faces on screen: the audio-only network's voices, each handed to a face by the AV model
shipped_separator.py   which weights are shipped; the factories the model registry exports to ONNX
MODEL_CARD.md          what was trained on what, and every measured figure with its command

Training and evaluation live in the lab (`lab/real_faces`, `lab/separation`): the live path never imports them.
"""
