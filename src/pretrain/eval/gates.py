"""Quality gates: thresholds on evaluation results, checked by ``pretrain eval --gate``.

A gate is a string ``"<metric> <op> <value>"`` where the metric is a dotted path into
``eval/results.json``: ``all.bpb <= 1.9``, ``code.loss < 4``, ``tasks.hellaswag.acc_norm
>= 0.3``, ``contamination.arc_easy.docs == 0``. The right side may be another metric times a
factor: ``all.bpb <= baselines.trigram.all.bpb * 0.85`` (the model at least 15% below the
trigram baseline). A gate whose metric is missing (a task that was skipped) fails: a gate
that cannot be checked is not a pass.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from ..config import ConfigError

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
        "==": operator.eq, "!=": operator.ne}
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_GATE = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")
_RHS = re.compile(rf"^(?:({_NUM})|([A-Za-z_][\w.\-]*)(?:\s*\*\s*({_NUM}))?)$")

Threshold = float | tuple[str, float]   # a number, or another metric times a factor


def parse(gate: str) -> tuple[str, str, Threshold]:
    m = _GATE.match(gate)
    rhs = _RHS.match(m[3]) if m else None
    if not m or not rhs:
        raise ConfigError(f"eval.gates: {gate!r} is not '<metric> <op> <number>' or "
                          "'<metric> <op> <metric> [* <number>]' (e.g. 'all.bpb <= 1.9', "
                          "'all.bpb <= baselines.trigram.all.bpb * 0.85')")
    if rhs[1] is not None:
        return m[1], m[2], float(rhs[1])
    return m[1], m[2], (rhs[2], float(rhs[3]) if rhs[3] else 1.0)


def _value(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def check(gates: list[str], results: dict[str, Any]) -> list[str]:
    """The failed gates, each with the value found (or why there is none)."""
    failed = []
    for gate in gates:
        path, op, threshold = parse(gate)
        node = _value(results, path)
        if isinstance(threshold, tuple):
            other = _value(results, threshold[0])
            if not isinstance(other, (int, float)):
                failed.append(f"{gate}: no value at {threshold[0]} in the results")
                continue
            want = other * threshold[1]
        else:
            want = threshold
        if not isinstance(node, (int, float)):
            failed.append(f"{gate}: no value at {path} in the results")
        elif not _OPS[op](node, want):
            failed.append(f"{gate}: got {node}" + (f" against {want:.5g}"
                                                   if isinstance(threshold, tuple) else ""))
    return failed
