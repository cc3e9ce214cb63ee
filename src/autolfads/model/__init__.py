"""The LFADS model: population-batched blocks, priors, observation models and the network."""

from autolfads.model.lfads import LFADSNetwork as LFADSNetwork
from autolfads.model.lfads import LFADSOutput as LFADSOutput
from autolfads.model.observations import OBSERVATION_MODELS as OBSERVATION_MODELS
from autolfads.model.observations import ObservationModel as ObservationModel
from autolfads.model.structure import LFADSStructure as LFADSStructure

__all__ = [
    "LFADSNetwork",
    "LFADSOutput",
    "LFADSStructure",
    "ObservationModel",
    "OBSERVATION_MODELS",
]
