"""Shipped checkpoints, installed as the package ``panda_fm.checkpoints`` (pyproject.toml maps this directory).

Each subdirectory listed in ``panda_fm.hub.REGISTERED_CHECKPOINTS`` is package data, so it loads by name from
anywhere after any ``pip install``: ``PandaPipeline.from_pretrained("panda-fm-small")``. Training runs may write
other checkpoints here; only the registered ones are shipped. This file holds no code.
"""
