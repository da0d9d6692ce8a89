"""The benchmark files an evaluation reads: the built-in task table, DCLM's CORE table, and
what identifies the files found (part of the eval stage's key, so that adding, removing or
changing a benchmark file reruns the evaluation). Light: no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..rundir import file_sha256
from .config import EvalConfig

# name -> (file under eval.tasks_dir, kind, continuation delimiter, metric CORE centres)
BUILTIN: dict[str, tuple[str, str, str, str]] = {
    "hellaswag": ("hellaswag/hellaswag_val_full.txt.bz2", "hellaswag", " ", "acc_norm"),
    "arc_easy": ("llm-foundry/arc_easy.jsonl", "mc", "\nAnswer: ", "acc_norm"),
    "arc_challenge": ("llm-foundry/arc_challenge.jsonl", "mc", "\nAnswer: ", "acc_norm"),
    "piqa": ("llm-foundry/piqa.jsonl", "mc", "\nAnswer: ", "acc_norm"),
    "openbook_qa": ("llm-foundry/openbook_qa.jsonl", "mc", " ", "acc_norm"),
    "copa": ("llm-foundry/copa.jsonl", "mc", " ", "acc"),
    "boolq": ("llm-foundry/boolq.jsonl", "mc", " ", "acc"),
    "commonsense_qa": ("llm-foundry/commonsense_qa.jsonl", "mc", " ", "acc"),
    "winogrande": ("llm-foundry/winogrande.jsonl", "schema", " ", "acc"),
    "winograd_wsc": ("llm-foundry/winograd_wsc.jsonl", "schema", " ", "acc"),
    "lambada_openai": ("llm-foundry/lambada_openai.jsonl", "lm", " ", "acc"),
    "wikitext2": ("wikitext-2/test.txt", "perplexity", "", ""),
}


def resolve(names: list[str], tasks_dir: str) -> list[tuple[str, Path, str, str]]:
    """(name, file, kind, delimiter) for each configured task: a built-in name (its file
    under ``tasks_dir``) or a path to a jsonl file in one of the three schemas, named by
    its file name up to the first dot. Results are keyed by name: two tasks of one name
    (``a/piqa.jsonl`` beside the built-in ``piqa``, ``mytask.v1`` and ``mytask.v2``) are a
    config error, not one result silently replacing the other."""
    out: list[tuple[str, Path, str, str]] = []
    seen: dict[str, str] = {}
    for spec in names:
        if spec in BUILTIN:
            rel, kind, delim, _ = BUILTIN[spec]
            out.append((spec, Path(tasks_dir) / rel, kind, delim))
        else:
            p = Path(spec)
            if not p.suffix and not p.is_file():   # a misspelt built-in, not a file name
                raise ConfigError(f"eval.tasks: {p.name!r} is neither a built-in task ("
                                  f"{', '.join(BUILTIN)}) nor a task file")
            out.append((p.name.split(".")[0], p, "auto", " "))
        name = out[-1][0]
        if name in seen:
            raise ConfigError(f"eval.tasks: {seen[name]!r} and {spec!r} are both task "
                              f"{name!r}; rename a file (its name up to the first dot names it)")
        seen[name] = spec
    return out


@dataclass(frozen=True)
class CoreTask:
    label: str
    files: tuple[str, ...]  # under eval.tasks_dir, first found wins; hellaswag's .txt is approximate
    kind: str               # mc | schema | lm
    shots: int
    delimiter: str
    baseline: float         # DCLM's random baseline, as a fraction


_Q = "\nAnswer: "


_HS = ("llm-foundry/hellaswag.jsonl", "hellaswag/hellaswag_val_full.txt.bz2")


_LF = "llm-foundry/"


TASKS: tuple[CoreTask, ...] = (
    CoreTask("hellaswag_zeroshot", _HS, "mc", 0, " ", 0.25),
    CoreTask("jeopardy", (_LF + "jeopardy_all.jsonl",), "lm", 10, _Q, 0.0),
    CoreTask("bigbench_qa_wikidata", (_LF + "bigbench_qa_wikidata.jsonl",), "lm", 10, " ", 0.0),
    CoreTask("arc_easy", (_LF + "arc_easy.jsonl",), "mc", 10, _Q, 0.25),
    CoreTask("arc_challenge", (_LF + "arc_challenge.jsonl",), "mc", 10, _Q, 0.25),
    CoreTask("copa", (_LF + "copa.jsonl",), "mc", 0, " ", 0.50),
    CoreTask("commonsense_qa", (_LF + "commonsense_qa.jsonl",), "mc", 10, " ", 0.20),
    CoreTask("piqa", (_LF + "piqa.jsonl",), "mc", 10, _Q, 0.50),
    CoreTask("openbook_qa", (_LF + "openbook_qa.jsonl",), "mc", 0, " ", 0.25),
    CoreTask("lambada_openai", (_LF + "lambada_openai.jsonl",), "lm", 0, " ", 0.0),
    CoreTask("hellaswag", _HS, "mc", 10, " ", 0.25),
    CoreTask("winograd", (_LF + "winograd_wsc.jsonl",), "schema", 0, " ", 0.50),
    CoreTask("winogrande", (_LF + "winogrande.jsonl",), "schema", 0, " ", 0.50),
    CoreTask("bigbench_dyck_languages", (_LF + "bigbench_dyck_languages.jsonl",), "lm", 10,
             " ", 0.0),
    CoreTask("agi_eval_lsat_ar", (_LF + "agi_eval_lsat_ar.jsonl",), "mc", 3, " ", 0.20),
    CoreTask("bigbench_cs_algorithms", (_LF + "bigbench_cs_algorithms.jsonl",), "lm", 10,
             " ", 0.0),
    CoreTask("bigbench_operators", (_LF + "bigbench_operators.jsonl",), "lm", 10, " ", 0.0),
    CoreTask("bigbench_repeat_copy_logic", (_LF + "bigbench_repeat_copy_logic.jsonl",), "lm",
             10, " ", 0.0),
    CoreTask("squad", (_LF + "squad.jsonl",), "lm", 10, " ", 0.0),
    CoreTask("coqa", (_LF + "coqa.jsonl",), "lm", 0, " ", 0.0),
    CoreTask("boolq", (_LF + "boolq.jsonl",), "mc", 10, _Q, 0.62),
    CoreTask("bigbench_language_identification",
             (_LF + "bigbench_language_identification.jsonl",), "mc", 10, " ", 0.091),
)


def _task_paths(cfg: EvalConfig) -> list[Path]:
    """The task files of ``cfg`` and, with ``core``, every candidate file of each CORE task
    (for the stage key: adding a preferred one changes what is read)."""
    paths = [p for _, p, _, _ in resolve(cfg.tasks, cfg.tasks_dir)]
    if cfg.core:
        paths += [Path(cfg.tasks_dir) / f for t in TASKS for f in t.files]
    return paths


def scored(cfg: EvalConfig) -> dict[str, Path]:
    """Benchmark name -> file, of every benchmark file this config scores that exists: its
    tasks, and with ``core`` each CORE task's first file found, by its label (where a task
    already reads that file, once; ``core_<label>`` where a task holds the name)."""
    out = {name: p for name, p, _, _ in resolve(cfg.tasks, cfg.tasks_dir) if p.is_file()}
    if cfg.core:
        for t in TASKS:
            found = [p for p in (Path(cfg.tasks_dir) / f for f in t.files) if p.is_file()][:1]
            if found and found[0] not in out.values():
                out[t.label if t.label not in out else f"core_{t.label}"] = found[0]
    return out


def missing_benchmarks(cfg: EvalConfig) -> list[str]:
    """The configured tasks' files that are not there (relative paths are read from the
    current directory): the data stage cannot decontaminate against them."""
    return [str(p) for _, p, _, _ in resolve(cfg.tasks, cfg.tasks_dir) if not p.is_file()]


def benchmark_files(cfg: EvalConfig) -> list[str]:
    """The benchmark files this config scores that exist here (a missing one is skipped
    by the eval stage with a line in its log): the data stage decontaminates against
    them (``data.decontam.from_eval``)."""
    return list(dict.fromkeys(str(p) for p in scored(cfg).values()))


def fingerprint(cfg: EvalConfig) -> list[tuple[str, str]]:
    """(path, sha256) of every benchmark file this config makes the eval stage read that
    exists: its tasks, the CORE files when ``core`` is on, lm-eval's task YAMLs. Contents,
    not size and time: an edit that keeps both (labels fixed in place, a copy with its
    times kept) still reruns the evaluation."""
    paths = _task_paths(cfg)
    if cfg.harness_include:
        paths += sorted(Path(cfg.harness_include).glob("**/*"))
    return [(str(p), file_sha256(p)) for p in paths if p.is_file()]
