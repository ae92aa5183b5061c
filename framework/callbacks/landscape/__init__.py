"""Functional core of the Hessian and loss-landscape probes.

One concept per module:

* :mod:`~framework.callbacks.landscape.parameter_vectors` — flat views of a module's trainable parameters.
* :mod:`~framework.callbacks.landscape.probe_loss` — the probed loss (``training_step`` or a user function) on fixed batches,
  evaluated without side effects, eagerly or functionally (``torch.func``).
* :mod:`~framework.callbacks.landscape.hessian_vector_product` — H·v by double backward or by ``jvp∘grad``.
* :mod:`~framework.callbacks.landscape.power_iteration` — top-k eigenpairs by power iteration with deflation.
* :mod:`~framework.callbacks.landscape.lanczos` — Lanczos tridiagonalisation with full re-orthogonalisation.
* :mod:`~framework.callbacks.landscape.hutchinson` — Hutchinson trace estimate with a standard error.
* :mod:`~framework.callbacks.landscape.spectral_density` — stochastic Lanczos quadrature eigenvalue density.
* :mod:`~framework.callbacks.landscape.directions` — filter-/layer-normalised random directions, eigenvector directions.
* :mod:`~framework.callbacks.landscape.grid_evaluation` — the loss on a 1-D / 2-D grid (loop or ``vmap``).
* :mod:`~framework.callbacks.landscape.merge_tree` — union-find sublevel-set merge tree and 0-dim persistence on grids.
* :mod:`~framework.callbacks.landscape.topology_summary` — minima, saddles, persistence statistics.
* :mod:`~framework.callbacks.landscape.figures` — contour/surface, persistence diagram, merge tree, density plots.
* JSON files are written by :func:`framework.atomic_files.write_json_atomic` (the project's one atomic writer).
"""
