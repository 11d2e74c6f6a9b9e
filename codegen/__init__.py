"""Code generation: kernel descriptions to LLVM IR (CPU) or Triton (GPU)."""
