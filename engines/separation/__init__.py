"""Cocktail-party voice isolation (issue 5): a causal audio-visual separator, its training and evaluation.

model.py      the network (Looking to Listen made causal), checkpoints
streaming.py  the live engine: STFT frames + per-face lip features → per-face audio, state per face
data.py       corpus clips → face units (voice + lip stream from the live front end) → mixtures
train.py      `launch.py train-separator`: AV model and the audio-only PIT baseline
evaluate.py   `launch.py eval-separator`: SI-SDRi / SDRi / swap rate on the held-out sets
shipped.py    which weights are shipped; the factories the model registry exports to ONNX
real_video.py a real video → one WAV per face + no-ground-truth proxies (lips vs output loudness)
MODEL_CARD.md what was trained on what, and every measured figure with its command
"""
