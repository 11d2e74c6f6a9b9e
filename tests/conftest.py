"""Hypothesis profiles for the test suite.

* default (local runs): 100 examples, no deadline (the machine is shared and slow);
* ``ci``: hypothesis's built-in CI profile (derandomized, no database), loaded when
  ``CI`` is set, with minicomp's health-check tweaks;
* ``deep``: many more examples, for a long hunt: ``MINICOMP_DEEP=1 pytest ...``.

It also sets ``MINICOMP_VERIFY=1`` (unless set): every compile verifies the IR after every pass.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Triton mode, decided once per test process (before any test module imports triton):
# ``@triton.jit`` builds interpreted or compiled functions depending on TRITON_INTERPRET at
# definition time, triton.language's own helpers included, and the two cannot be mixed.
# Without a CUDA device the Triton tests run in the interpreter, so set the flag up front;
# on a GPU machine leave it as the caller set it. (AOT compiles run in a subprocess then.)
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

# The verifier runs after every pass of every compile in the test suite (docs/passes.md): a pass
# that leaves malformed IR fails here by name, not later as a wrong number.
os.environ.setdefault("MINICOMP_VERIFY", "1")

_SLOW_OK = (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much)

settings.register_profile("dev", deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("ci", parent=settings.get_profile("ci"), deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("deep", deadline=None, max_examples=2000, suppress_health_check=_SLOW_OK)

if os.environ.get("MINICOMP_DEEP") == "1":
    settings.load_profile("deep")
elif os.environ.get("CI"):
    settings.load_profile("ci")
else:
    settings.load_profile("dev")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the README's test command): one worker per core, at most 8. Every worker
    imports torch and builds its own models (about 1 GiB each), so a 128-core machine gains
    nothing from 128 of them; the cap is about memory, not this suite's shape."""
    return max(1, min(os.cpu_count() or 1, 8))
