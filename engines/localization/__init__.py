"""Sound source localization (Senocak et al., CVPR 2018): where in the frame the sound comes from.

``model`` holds the three networks (visual encoder on the frozen pretrained ``trunk``, audio
encoder, attention fusion), ``losses`` the three training objectives, ``metrics`` the LVS/EZ-VSL
cIoU and AUC, ``baselines`` the training-free maps we must beat, ``data`` the cached samples cut
from generated scenes, ``train``/``evaluate`` the commands (``curves`` draws their PNGs,
``real_video`` is the check on real footage), ``shipped`` which checkpoint the model registry
exports. Nodes only ever see the exported ONNX through `engines.loader`.
"""
