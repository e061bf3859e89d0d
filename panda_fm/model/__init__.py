"""The Panda architecture."""

from panda_fm.model.model import PandaModel

__all__ = ["PandaModel"]
