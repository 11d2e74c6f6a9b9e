"""How many threads compiled CPU code runs on.

One rule, in this order (the first that is given wins):

1. the ``threads`` compile option (``minicomp.compile(model, inputs, threads=4)``);
2. the environment variable ``MINICOMP_NUM_THREADS`` (read when a model is compiled);
3. the cores this process may run on: ``len(os.sched_getaffinity(0))`` (a CPU set from
   ``taskset`` or a container's cpuset counts), else ``os.cpu_count()``
   (:func:`minicomp.codegen.llvm.runtime.threadpool.available_cores`).

That is the rule eager PyTorch's intra-op pool follows too (``OMP_NUM_THREADS``, else the
cores), but the two are set separately: to run minicomp on exactly the threads torch uses,
pass ``threads=torch.get_num_threads()``. The count is fixed when a model is compiled (it is
part of the generated code and of every cache key) and reported as ``CompiledModel.threads``.

Parallel kernels run on the process-wide pool of :mod:`minicomp.codegen.llvm.runtime.threadpool`
(the calling thread plus up to ``threads - 1`` workers). Where that pool does not exist
(hosts other than x86-64 Linux) every kernel runs on the calling thread and the count is 1;
asking for more there warns.
"""
from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Mapping
from typing import Any

from minicomp.errors import CompileError

#: The environment variable that sets the default thread count.
ENV = "MINICOMP_NUM_THREADS"
#: The largest thread count accepted (the pool starts at most this many minus one workers).
MAX_THREADS = 256


def _check(value: Any, where: str) -> int:
    """``value`` (an int; a decimal string from the environment) as a thread count in
    [1, MAX_THREADS], or one CompileError naming ``where``."""
    if isinstance(value, str) and where.startswith("$"):
        text = value.strip()
        try:
            value = int(text, 10)
        except ValueError:
            raise CompileError(f"{where} must be a whole number of threads, got {text!r}") from None
    elif isinstance(value, (bool, str)):
        raise CompileError(f"{where} must be a whole number of threads, got {value!r}")
    else:
        try:
            value = operator.index(value)
        except TypeError:
            raise CompileError(f"{where} must be a whole number of threads, got {value!r}") from None
    if not 1 <= value <= MAX_THREADS:
        raise CompileError(f"{where} must be between 1 and {MAX_THREADS}, got {value}")
    return value


def requested_threads(options: Mapping[str, Any]) -> int:
    """The thread count the rule above gives for compile ``options`` (validated)."""
    if options.get("threads") is not None:
        return _check(options["threads"], "the 'threads' option")
    env = os.environ.get(ENV, "").strip()
    if env:
        return _check(env, f"${ENV}")
    from minicomp.codegen.llvm.runtime.threadpool import available_cores
    return min(available_cores(), MAX_THREADS)


def compile_threads(options: Mapping[str, Any]) -> int:
    """The thread count compiled CPU code for ``options`` uses: :func:`requested_threads`, or 1
    where the process-wide pool does not exist (with a warning when more was asked for)."""
    from minicomp.codegen.llvm.runtime.threadpool import supported
    n = requested_threads(options)
    if n > 1 and not supported():
        if options.get("threads") is not None or os.environ.get(ENV, "").strip():
            warnings.warn(f"minicomp runs kernels on one thread on this host (its thread pool exists on "
                          f"x86-64 Linux only); {n} threads were asked for", RuntimeWarning, stacklevel=3)
        return 1
    return n
