"""Quality gates: thresholds on evaluation results, checked by ``pretrain eval --gate``.

A gate is a string ``"<metric> <op> <value>"`` where the metric is a dotted path into
``eval/results.json``: ``all.bpb <= 1.9``, ``code.loss < 4``, ``tasks.hellaswag.acc_norm
>= 0.3``, ``contamination.arc_easy.docs == 0``. The right side may be another metric times a
factor: ``all.bpb <= baselines.trigram.all.bpb * 0.85`` (the model at least 15% below the
trigram baseline). A gate whose metric is missing (a task that was skipped) or not a number
(NaN: nothing was scored) fails: a gate that cannot be checked is not a pass. lm-eval's
scores (``eval/harness.json``) are read under ``harness``: ``harness.arc_easy.acc >= 0.3``.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
from pathlib import Path
from typing import Any

from ..config import ConfigError

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
        "==": operator.eq, "!=": operator.ne}
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# lm-eval's metrics under several filters are "exact_match/strict-match" (harness.json)
_GATE = re.compile(r"^\s*([\w.\-/]+)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")
# a metric path may start with a digit (a domain's name may: "2024.bpb"), its next part
# with a letter, so that a mistyped number ("1.9x") is no path
_PATH = r"(?:[A-Za-z_][\w\-/]*|\w[\w\-]*\.[A-Za-z_][\w\-/]*)(?:\.[\w\-/]+)*"
_RHS = re.compile(rf"^(?:({_NUM})|({_PATH})(?:\s*\*\s*({_NUM}))?)$")

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


def load_results(eval_dir: Path) -> dict[str, Any] | None:
    """What gates read: ``results.json``, with lm-eval's ``harness.json`` (written after it)
    under ``harness``; None without ``results.json``."""
    path = eval_dir / "results.json"
    if not path.is_file():
        return None
    res: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    harness = eval_dir / "harness.json"
    if harness.is_file():
        res["harness"] = json.loads(harness.read_text(encoding="utf-8"))
    return res


def _near(results: dict[str, Any], path: str) -> str:
    """' (did you mean all.bpb?)' for a mistyped key of ``path`` (all.bbp): the first
    key the results lack, against the keys beside it; '' when none is close."""
    node: Any = results
    keys = path.split(".")
    for i, key in enumerate(keys):
        if not isinstance(node, dict):
            return ""
        if key not in node:
            names = [str(k) for k in node]
            # a close spelling, else the keys it begins (core.core: core_exact, core_offline)
            close = [c] if (c := _close(key, names)) else \
                sorted(k for k in names if k.startswith(key))[:3]
            return f" (did you mean {' or '.join('.'.join([*keys[:i], c, *keys[i + 1:]]) for c in close)}?)" \
                if close else ""
        node = node[key]
    return ""


def _close(key: str, keys: list[str]) -> str | None:
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return close[0] if close else None


def check_heads(gates: list[str], heads: set[str]) -> None:
    """Each gate's metrics (either side) start with one of ``heads`` (results.json's keys
    and the held-out domains): a mistyped one is a config error before any stage runs,
    not a failed gate after training."""
    for gate in gates:
        metric, _, threshold = parse(gate)
        for path in (metric, threshold[0]) if isinstance(threshold, tuple) else (metric,):
            head = path.split(".")[0]
            if head not in heads:
                close = _close(head, sorted(heads))
                hint = f" (did you mean {close}?)" if close else ""
                raise ConfigError(f"eval.gates: {gate!r}: {head!r} is not in the eval results"
                                  f"{hint}: a metric starts with one of "
                                  f"{', '.join(sorted(heads))}")


def _missing(results: dict[str, Any], path: str) -> str | None:
    """Why ``path`` holds no number to compare; None where it does."""
    node = _value(results, path)
    if isinstance(node, dict):
        return f"{path} is a table ({', '.join(sorted(node)[:6])}), not a number"
    if not isinstance(node, (int, float)):   # a bool is a number here (== 1)
        return f"no value at {path} in the results" + _near(results, path)
    if math.isnan(node):
        return f"{path} is NaN (nothing scored)"
    return None


def check(gates: list[str], results: dict[str, Any]) -> list[str]:
    """The failed gates, each with the value found (or why there is none)."""
    failed = []
    for gate in gates:
        path, op, threshold = parse(gate)
        node = _value(results, path)
        paths = [path, threshold[0]] if isinstance(threshold, tuple) else [path]
        why = next(filter(None, (_missing(results, p) for p in paths)), None)
        if why:
            failed.append(f"{gate}: {why}")
            continue
        want = _value(results, threshold[0]) * threshold[1] if isinstance(threshold, tuple) \
            else threshold
        if not _OPS[op](node, want):
            failed.append(f"{gate}: got {node}" + (f" against {want:.5g}"
                                                   if isinstance(threshold, tuple) else ""))
    return failed
