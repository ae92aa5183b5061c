"""The project's optimizers (selectable in YAML by ``class_path``, like any ``torch.optim.Optimizer``)."""

__all__: list[str] = []
