"""torchmetrics ``Metric``s of the project: a functional core plus a thin stateful class, exact under DDP."""

__all__: list[str] = []
