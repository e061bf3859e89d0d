"""panda_fm: pretrained forecast models for chaotic dynamical systems."""

__version__ = "0.1.0"
