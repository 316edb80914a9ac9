"""task=robustness: probes and reconstructions by modality subset and input noise."""

from mmae.evaluation.tasks.robustness.task import Robustness

__all__ = ["Robustness"]
