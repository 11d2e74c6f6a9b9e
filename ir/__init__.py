"""minicomp's graph IR: types, ops, graphs, text format, verifier, interpreter, kernels."""
