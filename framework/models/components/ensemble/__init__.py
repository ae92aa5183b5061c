"""Ensemble members (plain ``nn.Module`` classifiers) and the stacked / looped containers that run M of them."""

from framework.models.components.ensemble.member_stack import LoopedMembers, StackedMembers, load_member_weights, seeded_member_copies
from framework.models.components.ensemble.members import SmallCNN, SmallMLP

__all__ = ["LoopedMembers", "SmallCNN", "SmallMLP", "StackedMembers", "load_member_weights", "seeded_member_copies"]
