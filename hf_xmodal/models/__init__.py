"""Everything a checkpoint loads lives in this one flat folder.

A checkpoint loaded with `trust_remote_code=True` can only import files beside its own modeling
file, so the configs, models, processor and the pieces they share sit side by side here.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_cmsl import CMSLConfig
from .configuration_daml import DAMLConfig
from .configuration_dckt import DCKTConfig
from .configuration_dscmr import DSCMRConfig
from .configuration_mhtn import MHTNConfig
from .configuration_uncsm import UNCSMConfig
from .configuration_xmodal import TOWER_DIMS, XmodalConfig
from .inputs import add_towers
from .modeling_cmsl import CMSLModel, CMSLPreTrainedModel
from .modeling_daml import DAMLModel, DAMLPreTrainedModel
from .modeling_dckt import DCKTModel, DCKTPreTrainedModel
from .modeling_dscmr import DSCMRModel, DSCMRPreTrainedModel
from .modeling_mhtn import MHTNModel, MHTNPreTrainedModel
from .modeling_outputs import CrossModalOutput
from .modeling_uncsm import UNCSMModel, UNCSMPreTrainedModel
from .processing_xmodal import XmodalProcessor, XmodalTowerProcessor

MODELS = {
    "dscmr": (DSCMRConfig, DSCMRModel),
    "daml": (DAMLConfig, DAMLModel),
    "uncsm": (UNCSMConfig, UNCSMModel),
    "cmsl": (CMSLConfig, CMSLModel),
    "dckt": (DCKTConfig, DCKTModel),
    "mhtn": (MHTNConfig, MHTNModel),
}
"""Model name (its `model_type`) → (config class, model class)."""

for _config_class, _model_class in MODELS.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    AutoProcessor.register(_config_class, XmodalProcessor, exist_ok=True)
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")
# AutoProcessor finds a saved processor by the class name in processor_config.json among the
# registered ones, so the tower processor is registered too (under the shared base config).
AutoProcessor.register(XmodalConfig, XmodalTowerProcessor, exist_ok=True)
XmodalProcessor.register_for_auto_class()
XmodalTowerProcessor.register_for_auto_class()

__all__ = [
    "MODELS",
    "TOWER_DIMS",
    "CMSLConfig",
    "CMSLModel",
    "CMSLPreTrainedModel",
    "CrossModalOutput",
    "DAMLConfig",
    "DAMLModel",
    "DAMLPreTrainedModel",
    "DCKTConfig",
    "DCKTModel",
    "DCKTPreTrainedModel",
    "DSCMRConfig",
    "DSCMRModel",
    "DSCMRPreTrainedModel",
    "MHTNConfig",
    "MHTNModel",
    "MHTNPreTrainedModel",
    "UNCSMConfig",
    "UNCSMModel",
    "UNCSMPreTrainedModel",
    "XmodalConfig",
    "XmodalProcessor",
    "XmodalTowerProcessor",
    "add_towers",
]
