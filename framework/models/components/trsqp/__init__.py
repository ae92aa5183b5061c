"""Problem definitions used with the TR-SQP optimizer (equality-constrained CUTEst problems, strict-saddle problems,
the simulated noise model)."""
