"""Real-face voice isolation (issue 16): a cache of real face tracks, audio-visual sync features learned
on them, and a separator trained on real faces. See README.md beside this file."""
