"""The evaluation and sampling stages' configuration: ``[eval]`` and ``[sample]``.

Light on purpose (no torch): ``pretrain config show`` and ``--dry-run`` import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import PATH, ConfigError, absolute
from .gates import parse as parse_gate


def _task_path(spec: str) -> str:
    """``eval.tasks``: a built-in name (no folder, no suffix) as it is; a file absolute."""
    is_name = os.sep not in spec and not Path(spec).suffix and not spec.startswith("~")
    return spec if is_name else absolute(spec)


# the keys of results.json beside the held-out domains: no domain may take one of these
# names (or a dot, which a gate's metric path splits on)
RESULT_KEYS = ("all", "baselines", "tasks", "core", "contamination", "memorization",
               "harness")


@dataclass
class EvalConfig:
    # 0 = the whole val split; capped domains weigh equally in `all`
    max_tokens_per_domain: int = 100_000
    # unigram, bigram and trigram (Kneser-Ney) models counted from the training shards and
    # scored on the same held-out tokens; results.json "baselines" (gates can use them)
    baselines: bool = True
    baseline_train_tokens: int = 10_000_000  # above this an even sample is counted; 0 = all
    batch_size: int = 16
    # benchmark tasks (eval/tasks.py): built-in names (hellaswag, arc_easy, arc_challenge,
    # piqa, openbook_qa, copa, boolq, commonsense_qa, winogrande, winograd_wsc,
    # lambada_openai, wikitext2) found under tasks_dir, or paths of jsonl files in one of their schemas
    tasks: list[str] = field(default_factory=list, metadata={"resolve": _task_path})
    tasks_dir: str = field(default="../shared/data/eval", metadata=PATH)
    task_limit: int = 0                    # items per task (the first ones); 0 = all
    num_fewshot: int = 0                   # answered examples of the task before each item
    # lm-evaluation-harness tasks (eval/harness.py, the [eval] extra), results in
    # eval/harness.json; harness_include: a folder of task YAMLs (local files, offline)
    harness: list[str] = field(default_factory=list)
    harness_include: str = field(default="", metadata=PATH)
    # DCLM's CORE score (eval/core.py) over the CORE task files found under tasks_dir
    core: bool = False
    core_limit: int = 500                  # items per CORE task after DCLM's shuffle; 0 = all
    contamination: bool = True             # 13-gram overlap of the training data with the tasks
    # memorization probe (eval/memorization.py): greedy continuation of training and
    # held-out documents from their first prompt tokens
    memorization_docs: int = 64            # per group; 0 = off
    memorization_prompt_tokens: int = 32
    memorization_tokens: int = 16
    # thresholds checked by `pretrain eval --gate`, e.g. "all.bpb <= 1.9",
    # "tasks.hellaswag.acc_norm >= 0.3" (eval/gates.py)
    gates: list[str] = field(default_factory=list)

    # gates judge the results, they do not change them: not in the eval stage's key
    UNKEYED: ClassVar[tuple[str, ...]] = ("gates",)

    def __post_init__(self) -> None:
        for g in self.gates:
            parse_gate(g)
        if 0 < self.core_limit <= 10:
            raise ConfigError(f"eval.core_limit = {self.core_limit}: CORE's 10-shot prompts draw "
                              "their examples from the task's other items; use 0 (all) or > 10")
        if self.memorization_docs < 0 or self.memorization_prompt_tokens <= 0 \
                or self.memorization_tokens <= 0:
            raise ConfigError("memorization_docs must be >= 0, the token counts positive")
        if self.baseline_train_tokens < 0 or self.max_tokens_per_domain < 0 or self.batch_size <= 0 or self.task_limit < 0 \
                or self.num_fewshot < 0 or self.core_limit < 0:
            raise ConfigError("max_tokens_per_domain, task_limit, num_fewshot and core_limit "
                              "must be >= 0 and batch_size positive")
        if self.num_fewshot and self.task_limit and self.task_limit <= self.num_fewshot:
            raise ConfigError(f"eval.num_fewshot = {self.num_fewshot} draws each item's "
                              "examples from the task's other items, of which task_limit = "
                              f"{self.task_limit} leaves too few: raise task_limit above "
                              "num_fewshot (or 0, all)")


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["def", "The"])
    max_new_tokens: int = 64
    temperature: float = 0.8          # 0 = greedy
    top_k: int = 50                   # 0 = no top-k filter
    top_p: float = 1.0                # nucleus sampling; 1 = off
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError("max_new_tokens must be positive")
        if self.temperature < 0 or self.top_k < 0:
            raise ConfigError("temperature and top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p must be within (0, 1]")
        if not self.prompts:
            raise ConfigError("sample.prompts is empty: give at least one prompt")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"sample.seed must be within [0, 2**63), got {self.seed}")
