"""What compiled CPU code needs at run time, apart from generating it.

* :mod:`.jit` -- the host target machine, LLVM's optimization pipelines, object code and
  MCJIT loading (:class:`~.jit.Loaded`): the one way machine code enters the process.
* :mod:`.library` -- the process-wide library of shared GEMM functions, compiled (or loaded
  from a disk cache) once per process and resolved by every kernel that declares them.
* :mod:`.threadpool` -- the process-wide worker pool that parallel kernels hand their
  pieces to, and the count of usable cores.
* :mod:`.hugepages` -- transparent huge pages for large buffers, and the switch
  ``MINICOMP_HUGEPAGES`` that turns them off.

The code generator (``minicomp.codegen.llvm``) builds IR and asks this package to make it
run; nothing here decides what code a kernel gets.
"""
