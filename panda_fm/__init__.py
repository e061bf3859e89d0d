"""panda_fm: pretrained forecast models for chaotic dynamical systems.

Importing it registers :class:`PandaConfig` and :class:`PandaModel` with transformers' ``AutoConfig`` and
``AutoModel`` (model type ``"panda_fm"``).
"""

from transformers import AutoConfig, AutoModel

from panda_fm.config import MODEL_TYPE, PandaConfig
from panda_fm.model import PandaModel
from panda_fm.pipeline import GlitchWarning, MissingDataWarning, PandaPipeline
from panda_fm.uncertainty import CalibrationConfig

AutoConfig.register(MODEL_TYPE, PandaConfig, exist_ok=True)
AutoModel.register(PandaConfig, PandaModel, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "CalibrationConfig",
    "GlitchWarning",
    "MissingDataWarning",
    "PandaConfig",
    "PandaModel",
    "PandaPipeline",
    "__version__",
]
