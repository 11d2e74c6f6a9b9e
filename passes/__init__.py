"""Graph-to-graph passes and the pass manager."""
