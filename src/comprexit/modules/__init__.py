"""The trainable pieces of ComprExIT, one job each: depth mixing, allocation, width transmission, projection."""

from .allocation import Allocation, AttentionAllocation, TransportAllocation, make_allocation
from .depth import DepthTransmission
from .projector import Projector, ProjectorBranch, SlotScale
from .sinkhorn import log_sinkhorn
from .width import WidthOutput, WidthTransmission

__all__ = [
    "Allocation",
    "AttentionAllocation",
    "DepthTransmission",
    "Projector",
    "ProjectorBranch",
    "SlotScale",
    "TransportAllocation",
    "WidthOutput",
    "WidthTransmission",
    "log_sinkhorn",
    "make_allocation",
]
