"""The call path of a :class:`~minicomp.driver.CompiledModel`: guards, weights, autograd, one run.

A call passes the user's inputs, then (by default) the weights the module holds at
that moment (:class:`minicomp.weights.WeightPlan`) and the tensors the program reads
by attribute, to the compiled program of its signature. The fast path (the last
entry used, every input of its shape, dtype and device, no pending negation, grad
not needed) costs a few attribute reads per tensor; anything else goes the slow
path (:meth:`CallPath._call`), which converts and checks inputs and weights with
clear :class:`~minicomp.errors.GuardError`\\ s (:mod:`minicomp.guards`), compiles a
new entry when needed (``recompile``, ``recompile_limit``), and runs under
autograd (:mod:`minicomp.grad`) when grad mode is on and a tensor requires grad.

A module is traced in the train/eval mode it is in (dropout, batch norm's statistics), so the
``training`` flags of its submodules are part of an entry's signature: after ``model.train()``
or ``model.eval()`` the next call takes (or compiles) the entry of the new mode, never the old one.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from minicomp import guards
from minicomp.errors import GuardError


class CallPath:
    """Calling a compiled model; the driver's CompiledModel sets the state below and ``_build_for``."""

    _last: Any
    _entries: dict
    _lock: threading.Lock
    _plan: Any
    _nargs: int | None
    _freeze: bool
    _recompile: bool
    _limit: int
    _builds: int
    _gpu: bool
    _cuda: bool
    _modules: tuple  # the module's submodules (empty for a function): their ``training`` flags are guarded
    device: torch.device

    def _build_for(self, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any) -> Any:
        e = self._last
        if e is not None and len(args) == e.n_user and (not e.mode or self._mode() == e.mode) \
                and (not e.layout or input_layout(args) == e.layout):
            ins, cuda = None, self._cuda
            try:  # a KeyError (a weight is gone), an AttributeError (a weight is None) or a RuntimeError
                # (a nested tensor's shape) means: the slow path says what is wrong
                for a, shape, dt in zip(args, e.shapes, e.dtypes):
                    if not (isinstance(a, torch.Tensor) and a.dtype is dt and a.shape == shape
                            and (a.is_cuda if cuda else a.is_cpu) and not a.is_neg()):
                        break
                else:
                    w = self._plan.fetch() if self._plan is not None else ()
                    if not e.lifted:
                        ins = args if e.frozen is None or e.frozen.holds(w) else None
                    else:  # weights and attribute tensors: tensors by construction, else as the inputs
                        rest = w + e.attrs
                        ins = args + rest
                        for a, (shape, dt) in zip(rest, e.rest_types):
                            if not (a.dtype is dt and a.shape == shape and (a.is_cuda if cuda else a.is_cpu)
                                    and not a.is_neg()):
                                ins = None
                                break
            except (AttributeError, KeyError, RuntimeError):
                ins = None
            if ins is not None:
                if e.grad is not None and torch.is_grad_enabled() and _requires_grad(args, w, e.attrs):
                    return e.unflatten(e.grad(args, w, e.attrs))  # guards passed: no second check
                try:
                    return e.unflatten(e.run(ins))
                except (RuntimeError, TypeError, ValueError):  # a sparse or MKL-DNN tensor has no data
                    self._check_kinds(e, ins)  # pointer: say which one is (else the error stands)
                    raise
        return self._call(args)

    def _mode(self) -> tuple:
        """The ``training`` flag of every submodule now (an entry is traced in one mode)."""
        return tuple(m.training for m in self._modules)

    def _check_kinds(self, e: Any, ins: Sequence[Any]) -> None:
        """GuardError naming the first of ``ins`` (user inputs, weights, attributes) native code cannot read."""
        names = self._plan.names if self._plan is not None and e.lifted else []
        for i, t in enumerate(ins):
            j = i - e.n_user
            label = (f"input {i}" if j < 0 else f"weight '{names[j]}'" if j < len(names)
                     else f"tensor attribute {j - len(names)}")
            if isinstance(t, torch.Tensor):
                guards.check_kind(label, t)

    def _call(self, args: Sequence[Any]) -> Any:
        """The slow path: convert and check inputs and weights, find (or compile) their entry, run it."""
        tensors = self._as_tensors(args, self._nargs)
        weights = self._weights()
        entry = self._entry_for(tensors, weights)
        self._last = entry
        if entry.eager:
            return entry.unflatten(entry.run(tensors))
        names = self._plan.names if self._plan is not None else ()
        if entry.lifted:
            weights = [self._on_device(name, w) for name, w in zip(names, weights)]
        if entry.grad is not None and torch.is_grad_enabled() and _requires_grad(tensors, weights, entry.attrs):
            return entry.unflatten(entry.grad(tensors, weights, entry.attrs))
        ins = [*tensors, *weights, *entry.attrs] if entry.lifted else list(tensors)
        return entry.unflatten(entry.run(ins))

    def _as_tensors(self, args: Sequence[Any], expected: int | None, device: torch.device | None = None):
        if not self._gpu:
            return guards.as_tensors(args, expected)
        from minicomp.triton_runtime import as_device_tensors
        checked = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                a = guards.resolved(f"input {i}", a)
            elif isinstance(a, np.ndarray):
                guards.from_numpy(f"input {i}", a)  # a clear error for arrays torch cannot take
            checked.append(a)
        return as_device_tensors(checked, device or self.device, expected)

    def _weights(self) -> list[torch.Tensor]:
        """The module's weights now (plan order), checked like inputs: kind and (CPU target) device."""
        if self._plan is None:
            return []
        out = self._plan.fetch_checked()
        for name, w in zip(self._plan.names, out):
            guards.check_kind(f"weight '{name}'", w)
            if not self._gpu and w.device.type != "cpu":
                raise GuardError(f"weight '{name}' is on device '{w.device}', but this model was compiled for "
                                 "the CPU; move the model with .cpu() or compile with a GPU target")
        return out

    def _on_device(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """``w`` as native code reads it: negation resolved, on the program's device (for a GPU target a
        weight held elsewhere is copied on every call, with a warning to move the model there)."""
        w = guards.resolved(f"weight '{name}'", w)
        if self._gpu and w.device != self.device:
            warnings.warn(f"weight '{name}' is on {w.device}, the compiled program runs on {self.device}: "
                          "it is copied on every call; move the model there", RuntimeWarning, stacklevel=4)
            w = w.to(self.device)
        return w

    def _entry_for(self, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor] = ()) -> Any:
        """The entry for these inputs and weights, compiled when there is none or it is stale."""
        mode = self._mode()
        sig = (guards.Signature.of([*tensors, *weights] if not self._freeze else tensors), mode)
        entry = self._entries.get(sig)
        if entry is not None and _stale(entry, weights, tensors) is None:
            return entry
        with self._lock:
            entry = self._entries.get(sig)
            stale = _stale(entry, weights, tensors) if entry is not None else None
            if entry is not None and stale is None:
                return entry
            if self._entries and not self._recompile:
                old = next(iter(self._entries.values()))
                why = stale or ("the module's train/eval mode changed since it was compiled" if old.mode != mode
                                else _mismatch(old, tensors, weights, self._plan))
                raise GuardError(f"{why}; recompilation is off (recompile=False)")
            if self._builds >= self._limit:
                raise GuardError(f"more than {self._limit} input signatures (or changes of frozen weights) "
                                 f"compiled (recompile_limit); last: {sig[0]}" + (f"; {stale}" if stale else ""))
            start = time.perf_counter()
            entry = self._build_for(tensors, weights)
            entry.compile_s = time.perf_counter() - start
            entry.mode = mode
            self._entries[sig] = entry
            self._builds += 1
            return entry


def _requires_grad(*groups: Sequence[torch.Tensor]) -> bool:
    return any(t.requires_grad for g in groups for t in g)


def input_layout(tensors: Sequence[Any]) -> tuple:
    """Each input's strides and storage offset (None for a non-tensor): guarded for programs whose
    result depends on them (``as_strided`` reads an input's storage order)."""
    return tuple((a.stride(), a.storage_offset()) if isinstance(a, torch.Tensor) else None for a in tensors)


def _stale(entry: Any, weights: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor] = ()) -> str | None:
    """Why ``entry`` no longer fits: frozen weights changed, a lifted attribute tensor changed type,
    or (a program reading its inputs' layout) the inputs' strides differ from the example's."""
    if entry.layout and input_layout(tensors) != entry.layout:
        return "the inputs' strides or offsets differ from the example's (the model reads them: as_strided)"
    if entry.frozen is not None and not entry.frozen.holds(weights):
        return entry.frozen.change(weights) or "the frozen weights changed"
    n = len(entry.shapes) - len(entry.attrs)
    for i, t in enumerate(entry.attrs):
        if tuple(t.shape) != entry.shapes[n + i] or t.dtype is not entry.dtypes[n + i]:
            return f"tensor attribute {i} (read by the model, not a parameter or buffer) changed shape or dtype"
    return None


def _mismatch(entry: Any, tensors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], plan: Any) -> str:
    """How these inputs and weights differ from ``entry``'s signature (for a GuardError)."""
    n = entry.n_user
    user = guards.Signature(entry.shapes[:n], entry.dtypes[:n])
    if guards.Signature.of(tensors) != user:
        return guards.mismatch(user, tensors)
    if entry.lifted and plan is not None:
        for name, w, shape, dt in zip(plan.names, weights, entry.shapes[n:], entry.dtypes[n:]):
            if tuple(w.shape) != shape or w.dtype is not dt:
                return (f"weight '{name}' is {str(w.dtype).replace('torch.', '')}{list(w.shape)}, compiled for "
                        f"{str(dt).replace('torch.', '')}{list(shape)}")
    return "the inputs differ from the compiled signature"
