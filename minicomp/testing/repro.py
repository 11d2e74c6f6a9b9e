"""Standalone reproduction scripts for mismatches found by :func:`minicomp.testing.check_compile`.

A repro script embeds the graph as minicomp text IR, the input values (base64
``.npy``), and the graph written out as plain PyTorch code. Running it recomputes
PyTorch eager, the minicomp interpreter and each compile target, and prints where
they differ (exit status 1 when any does).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from minicomp.ir.graph import Graph
from minicomp.testing.torch_ref import encode_array, torch_source

_TEMPLATE = '''\
"""minicomp repro: {summary}

Run with:  python {filename}
Rebuilds the inputs, runs the graph with PyTorch eager (plain torch code below),
with the minicomp interpreter and with the compile targets {targets}, and compares.
"""
import base64
import io
import sys

import numpy as np
import torch
import torch.nn.functional as F


def _arr(text):
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


DTYPES = {dtypes!r}
INPUTS = [{inputs}]
C = {{{consts}}}
IR = {ir!r}


{torch_source}

def torch_inputs():
    ts = [torch.from_numpy(a.copy()) for a in INPUTS]
    return [t.to(torch.bfloat16) if d == "bf16" else t for t, d in zip(ts, DTYPES)]


def main():
    from minicomp.ir import parse
    from minicomp.testing.check import compare_outputs, run_layer
    from minicomp.testing.oracle import fp64_reference
    expected = torch_fn(*torch_inputs())
    fp64 = fp64_reference(torch_fn, torch_inputs())
    graph = parse(IR)
    failed = False
    for layer in ["interpreter", *{targets!r}]:
        try:
            got = run_layer(graph, INPUTS, layer, passes={passes!r})
            problem = compare_outputs(expected, got, graph, fp64)
        except Exception as e:  # a crash is a failure too
            problem = f"raised {{type(e).__name__}}: {{e}}"
        print(f"{{layer}}: {{'OK' if problem is None else 'MISMATCH'}}")
        if problem is not None:
            failed = True
            print(problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
'''


def repro_dir() -> str:
    """Where repro scripts go: ``$MINICOMP_REPRO_DIR`` if set, else ``<tmp>/minicomp-repros``."""
    path = os.environ.get("MINICOMP_REPRO_DIR") or os.path.join(tempfile.gettempdir(), "minicomp-repros")
    os.makedirs(path, exist_ok=True)
    return path


def write_repro(graph: Graph, ir: str, inputs: Sequence[np.ndarray], targets: Sequence[str],
                summary: str, passes: Sequence[str] | None = None) -> str:
    """Write ``repro_<hash>.py`` (hash of the IR and input bytes) and return its path.

    ``passes`` (pass names) is what the script hands to the targets; None means the
    default pipeline. The script needs only numpy, torch and minicomp.
    """
    h = hashlib.sha256(ir.encode())
    for a in inputs:
        h.update(np.ascontiguousarray(a).tobytes())
    filename = f"repro_{h.hexdigest()[:12]}.py"
    source, consts = torch_source(graph)
    text = _TEMPLATE.format(
        summary=summary.replace('"""', "'''").splitlines()[0] if summary else "mismatch",
        filename=filename, targets=list(targets), passes=list(passes) if passes is not None else None,
        dtypes=[str(v.type.dtype) for v in graph.inputs],
        inputs=", ".join(f"_arr({encode_array(a)!r})" for a in inputs),
        consts=", ".join(f"{k!r}: _arr({encode_array(v)!r})" for k, v in consts.items()),
        ir=ir, torch_source=source)
    path = os.path.join(repro_dir(), filename)
    with open(path, "w") as f:
        f.write(text)
    return path
