"""Deep cross-media retrieval methods as Hugging Face models.

Importing the package registers every model with `AutoConfig`, `AutoModel` and `AutoProcessor`,
and the `"cross-modal-retrieval"` task with `transformers.pipeline`.
"""

from importlib.metadata import version

from .models import (
    MODELS,
    CMSLConfig,
    CMSLModel,
    CrossModalOutput,
    DAMLConfig,
    DAMLModel,
    DSCMRConfig,
    DSCMRModel,
    UNCSMConfig,
    UNCSMModel,
    XmodalProcessor,
)
from .pipelines import CrossModalRetrievalPipeline

__version__ = version("hf_xmodal")

__all__ = [
    "MODELS",
    "CMSLConfig",
    "CMSLModel",
    "CrossModalOutput",
    "CrossModalRetrievalPipeline",
    "DAMLConfig",
    "DAMLModel",
    "DSCMRConfig",
    "DSCMRModel",
    "UNCSMConfig",
    "UNCSMModel",
    "XmodalProcessor",
    "__version__",
]
