"""Model-independent pieces of the retail-demand DataModules: the synthetic generator with peak events, peak / post-peak
subsets, covariates, and forking-window / rolling-origin datasets (``docs/spade.md``)."""
