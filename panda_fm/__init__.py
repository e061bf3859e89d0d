"""panda_fm: pretrained forecast models for chaotic dynamical systems."""

from panda_fm.config import PandaConfig
from panda_fm.model import PandaModel
from panda_fm.pipeline import PandaPipeline

__version__ = "0.1.0"
__all__ = ["PandaConfig", "PandaModel", "PandaPipeline", "__version__"]
