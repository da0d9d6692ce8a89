"""DCLM's CORE score (Li et al. 2024, arXiv 2406.11794), the number nanochat reports.

22 in-context-learning tasks, each scored the DCLM way and centred against DCLM's random
baseline ``b``: ``centered = (acc - b) / (1 - b)``; CORE is the mean of the 22 centred
scores (GPT-2 1.5B: 0.2565). The task table (few-shot counts, delimiters, baselines) is
DCLM's ``eval/mmlu_and_lowvar.yaml`` and ``eval_meta_data``; the scoring follows
nanochat's ``core_eval``:

- every prompt starts with BOS; few-shot examples are the task's other items, answered,
  each followed by a blank line, drawn with ``random.Random(1234 + i)`` for item ``i``;
  a task's items are shuffled with ``random.Random(1337)`` before ``limit`` is applied,
  so a limited run scores the same items nanochat's does;
- multiple choice: one prompt per choice; the continuation is what follows the tokens
  all choices share; the prediction is the lowest mean per-token loss;
- schema: one prompt per context option; the continuation is the shared token suffix;
  lowest mean loss;
- language modelling: correct only if every continuation token is the greedy argmax.

Offline, 18 task files match DCLM's byte for byte (llm-foundry's, under
``eval.tasks_dir``); SQuAD and CoQA are missing, and HellaSwag exists only in another
text form (same items, different markup cleaning). The result therefore carries
``core_exact`` (the tasks scored on DCLM's own files), ``core_offline`` (every task
scored, HellaSwag approximated) and the list of missing tasks. Neither is comparable with
a 22-task CORE unless ``missing`` is empty and every task is exact. A user who has the
DCLM/nanochat eval bundle puts its files under ``llm-foundry/`` and gets all 22.

DCLM's baselines are not always 1/choices: BoolQ's is its majority class (62%), and
commonsense_qa, agi_eval_lsat_ar and bigbench_language_identification keep the baseline
of the original task (5, 5 and 11 options) although llm-foundry's files carry 4 choices;
a model guessing at random scores above 0 on those. ``chance`` (1/choices of the file)
is reported next to ``baseline`` for that reason.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..log import Progress, log0
from .config import EvalConfig
from .files import TASKS, CoreTask
from .scoring import common_prefix, device_of, score_tails, seq_len_of
from .tasks import Item, load, shot_indices

GPT2_XL_CORE = 0.256525  # nanochat's reference: GPT-2 1.5B on all 22 tasks


def _shot(it: Item, kind: str, delim: str) -> str:
    ctx = it.contexts[it.gold].strip() if kind == "lm" else it.contexts[it.gold]
    return ctx + delim + it.continuations[it.gold]


def sequences(it: Item, kind: str, delim: str, shots: list[Item], tok: Any
              ) -> list[tuple[list[int], int]]:
    """(BOS + prompt tokens, number of continuation tokens at its end), one per choice
    (mc), per context option (schema) or one (lm)."""
    prefix = "".join(_shot(s, kind, delim) + "\n\n" for s in shots)
    bos = [tok.bos_id]
    if kind == "lm":
        ctx = prefix + it.contexts[0].strip() + delim
        without = bos + tok.encode(ctx.strip())  # a trailing space would merge into the answer
        full = bos + tok.encode(ctx + it.continuations[0])
        n = len(full) - len(without)
        if full[:len(without)] != without:  # the tokenizer merged across the boundary
            n = len(full) - common_prefix([full, without])
        return [(full, max(n, 1))]
    rows = [bos + tok.encode(prefix + c + delim + x)
            for c, x in zip(it.contexts, it.continuations, strict=True)]
    if kind == "mc":
        shared = common_prefix(rows)
        return [(r, max(len(r) - shared, 1)) for r in rows]
    shared = common_prefix([r[::-1] for r in rows])  # schema: the shared suffix
    return [(r, max(min(shared, len(r) - 1), 1)) for r in rows]


def score_task(model: torch.nn.Module, tok: Any, task: CoreTask, items: list[Item],
               batch_size: int = 16) -> dict[str, Any]:
    """Accuracy of ``items`` (already shuffled and limited) with ``task``'s shots."""
    if task.shots and len(items) <= task.shots:
        raise ConfigError(f"CORE task {task.label} needs more than {task.shots} items "
                         f"for its {task.shots}-shot prompts, got {len(items)}")
    rows: list[tuple[list[int], int]] = []
    spans = []
    for i, it in enumerate(items):
        shots = [items[j] for j in shot_indices(i, len(items), task.shots)]
        seqs = sequences(it, task.kind, task.delimiter, shots, tok)
        spans.append((len(rows), len(seqs)))
        rows.extend(seqs)
    scores = score_tails(model, rows, seq_len_of(model), device_of(model), batch_size)
    correct = 0
    chance = 0.0
    for it, (start, n) in zip(items, spans, strict=True):
        s = scores[start:start + n]
        if task.kind == "lm":
            correct += s[0].greedy
            continue
        chance += 1 / n
        mean_loss = [-t.logprob / t.tokens for t in s]
        correct += min(range(n), key=mean_loss.__getitem__) == it.gold
    acc = correct / len(items)
    return {"acc": round(acc, 5), "baseline": task.baseline,
            "centered": round((acc - task.baseline) / (1 - task.baseline), 5),
            "chance": round(chance / len(items), 5), "items": len(items), "shots": task.shots}


def task_items(task: CoreTask, tasks_dir: str, limit: int) -> tuple[Path, bool, list[Item]] | None:
    """(file, whether it is DCLM's own, items in DCLM's shuffled order, the first
    ``limit``) of the first of the task's files found; None if none is there."""
    path = next((Path(tasks_dir) / f for f in task.files if (Path(tasks_dir) / f).is_file()),
                None)
    if path is None:
        return None
    exact = path.suffix == ".jsonl"
    _, items = load(path, task.kind if exact else "hellaswag", task.delimiter)
    random.Random(1337).shuffle(items)
    return path, exact, items[:limit or None]


def run(model: torch.nn.Module, tok: Any, cfg: EvalConfig) -> dict[str, Any]:
    """Every CORE task whose file is under ``cfg.tasks_dir``; ``cfg.core_limit`` items per
    task (0 = all) after DCLM's shuffle."""
    tasks_dir, limit = cfg.tasks_dir, cfg.core_limit
    per_task: dict[str, Any] = {}
    missing = []
    with Progress("eval CORE", total=len(TASKS), unit="tasks", every_s=5.0) as bar:
        for task in TASKS:
            bar.update(0, task=task.label)
            found = task_items(task, tasks_dir, limit)
            if found is None:
                missing.append(task.label)
            else:
                path, exact, items = found
                res = score_task(model, tok, task, items, cfg.batch_size)
                per_task[task.label] = {**res, "exact": exact, "file": str(path)}
            bar.update(1)
    if missing:
        log0(f"eval: CORE tasks without a file under {tasks_dir}: {', '.join(missing)}")
    exact_scores = [r["centered"] for r in per_task.values() if r["exact"]]
    all_scores = [r["centered"] for r in per_task.values()]
    return {
        "tasks": per_task,
        "core_exact": round(sum(exact_scores) / len(exact_scores), 5) if exact_scores else None,
        "exact_tasks": len(exact_scores),
        "core_offline": round(sum(all_scores) / len(all_scores), 5) if all_scores else None,
        "scored_tasks": len(all_scores),
        "missing": missing,
        "limit": limit,
        "comparable_with_gpt2": not missing and len(exact_scores) == len(TASKS) and not limit,
    }


def table(res: dict[str, Any]) -> str:
    lines = [f"{'CORE task':<34}{'shots':>6}{'items':>7}{'acc':>8}{'chance':>8}"
             f"{'baseline':>10}{'centered':>10}"]
    for name, r in res["tasks"].items():
        mark = "" if r["exact"] else "  (approximate: other text form)"
        lines.append(f"{name:<34}{r['shots']:>6}{r['items']:>7}{r['acc']:>8.3f}"
                     f"{r['chance']:>8.3f}{r['baseline']:>10.3f}{r['centered']:>10.3f}{mark}")
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"
    lines.append(f"CORE over the {res['exact_tasks']} tasks on DCLM's own files: "
                 f"{fmt(res['core_exact'])}; over all {res['scored_tasks']} scored: "
                 f"{fmt(res['core_offline'])}")
    if not res["comparable_with_gpt2"]:
        why = [f"missing {', '.join(res['missing'])}"] if res["missing"] else []
        if res["limit"]:
            why.append(f"{res['limit']} items per task")
        if res["scored_tasks"] != res["exact_tasks"]:
            why.append("HellaSwag approximated")
        lines.append(f"not comparable with GPT-2 1.5B's 22-task {GPT2_XL_CORE} "
                     f"({'; '.join(why)})")
    return "\n".join(lines)
