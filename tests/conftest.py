"""Hypothesis profiles for the test suite.

* default (local runs): 100 examples, no deadline (the machine is shared and slow);
* ``ci``: hypothesis's built-in CI profile (derandomized, no database), loaded when
  ``CI`` is set, with minicomp's health-check tweaks;
* ``deep``: many more examples, for a long hunt: ``MINICOMP_DEEP=1 pytest ...``.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

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
