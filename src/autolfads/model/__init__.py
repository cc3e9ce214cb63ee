"""The LFADS model in plain PyTorch, K workers batched: encoders, controller, generator, factors,
read-in/read-out, priors and observation models. `ops.Ops` is the reference of the operations
`autolfads.accel` may run faster."""

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
