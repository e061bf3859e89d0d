"""Pretraining with PyTorch Lightning.

Import the pieces from their modules (``panda_fm.training.config``, ``.module``, ``.datamodule``,
``.run``); this package does not import Lightning on its own, so reading a config stays cheap.
"""
