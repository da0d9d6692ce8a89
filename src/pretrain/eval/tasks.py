"""Benchmark tasks from local files, scored by the log-likelihood of continuations.

Three kinds of task cover the common benchmarks (the schemas are llm-foundry's, which is
how the shared evaluation files are stored):

- ``mc``: ``{"query", "choices", "gold"}``: one context, several continuations (ARC, PIQA,
  OpenBookQA, COPA, BoolQ, HellaSwag; HellaSwag's 6-lines-per-item text file too);
- ``schema``: ``{"context_options", "continuation", "gold"}``: several contexts, one
  continuation (WinoGrande and WSC's partial scoring);
- ``perplexity``: a text file scored whole (WikiText-2): loss, perplexity, bits per byte;
- ``lm``: ``{"context", "continuation"}``: correct only if every continuation token is the
  model's greedy choice (LAMBADA: the last word).

Metrics per task: ``acc`` (highest summed log-likelihood), ``acc_norm`` (highest
log-likelihood per character of the choice, lm-eval's length normalisation), the random
baseline ``chance`` and ``centered`` = (acc - chance) / (1 - chance), CORE's centring
(with ``acc_norm`` for the tasks where CORE uses it). A task is added by naming a jsonl
file in one of these schemas in ``eval.tasks``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..data.benchmarks import COMPRESSED, open_text
from ..data.filelines import compression
from ..log import Progress, log0
from .config import EvalConfig
from .files import BUILTIN, resolve
from .loss import score
from .scoring import Tail, common_prefix, device_of, score_tails, seq_len_of, windows


@dataclass
class Item:
    contexts: list[str]        # one per choice (mc repeats the query)
    continuations: list[str]   # one per choice (schema repeats the continuation)
    gold: int
    delimiter: str = " "       # between context and continuation (scored with the continuation)

    def pairs(self) -> list[tuple[str, str]]:
        """(context, continuation) per choice, laid out as lm-eval's own prompts are: a
        delimiter's label ("\nAnswer:") ends the context and only its trailing whitespace
        starts the continuation. Scored with the continuation, the label's log-probability,
        the same for every choice, was divided by each choice's length in acc_norm, which
        then favoured the longest choice."""
        sep = self.delimiter[len(self.delimiter.rstrip()):]
        label = self.delimiter[:len(self.delimiter) - len(sep)]
        return [(c + label, sep + x) for c, x in zip(self.contexts, self.continuations,
                                                     strict=True)]


def _lines(f: Any, path: Path) -> Any:
    """The file's lines (``f`` opened with errors="surrogateescape"); a line that is not
    UTF-8 is an error naming the file and the line, a compressed file under another name
    (or a damaged one) an error naming the file."""
    try:
        for n, line in enumerate(f, 1):
            try:
                line.encode("utf-8")   # the bytes that were not UTF-8 are surrogates here
            except UnicodeEncodeError as e:
                bad = line[e.start].encode("utf-8", "surrogateescape")[0]
                codec = None if path.name.lower().endswith(COMPRESSED) else compression(path)
                raise ConfigError(f"{path}:{n}: not UTF-8 (byte 0x{bad:02x} at character "
                                  f"{e.start + 1} of the line): " + (
                                      f"{'an' if codec == 'xz' else 'a'} {codec} "
                                      f"({SUFFIX[codec]}) file under a name without its "
                                      "suffix; name it by its compression" if codec else
                                      "save the task file as UTF-8")) from None
            yield line
    except ConfigError:
        raise
    except Exception as e:   # noqa: BLE001 -- each codec raises its own type (LZMAError, ZstdError)
        raise ConfigError(f"{path}: not a UTF-8 task file (or not the compression its name "
                          f"says): {type(e).__name__}: {e}") from None


# a task file's codecs, by the suffix open_text reads each through
SUFFIX = {"gzip": ".gz", "zstd": ".zst", "bzip2": ".bz2", "xz": ".xz"}


def _text(rec: dict[str, Any], key: str) -> str:
    value = rec[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, not {value!r}")
    return value


def load(path: Path, kind: str, delimiter: str = " ", limit: int = 0) -> tuple[str, list[Item]]:
    """(kind, items) of a task file; ``kind = "auto"`` reads it from the first record."""
    if not path.is_file():
        raise ConfigError(f"eval task file not found: {path}")
    items: list[Item] = []
    with open_text(path, errors="surrogateescape") as f:
        if kind == "hellaswag":
            lines = [line.rstrip("\n") for line in _lines(f, path)]
            while lines and not lines[-1].strip():
                lines.pop()
            if len(lines) % 6:
                raise ConfigError(f"{path}: {len(lines)} lines, not items of 6 (context, gold, "
                                  f"4 endings): the last item, from line {len(lines) // 6 * 6 + 1}, "
                                  "is cut short")
            for i in range(0, len(lines), 6):
                try:
                    gold = _gold(lines[i + 1], 4)
                except ValueError as e:
                    raise ConfigError(f"{path}:{i + 2}: not a hellaswag gold line ({e})") from None
                items.append(Item([lines[i]] * 4, lines[i + 2:i + 6], gold, delimiter))
                if limit and len(items) >= limit:
                    break
            return "mc", _some(items, path)
        for lineno, line in enumerate(_lines(f, path), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):   # a JSON array file, a list per line
                    raise TypeError(f"a JSON {type(rec).__name__}, not an object: task files "
                                    "are JSON lines, one object per line")
                if kind == "auto":
                    kind = "mc" if "choices" in rec else "schema" if "context_options" in rec \
                        else "lm"
                items.append(_item(rec, kind, delimiter))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                hint = "; task files are JSON lines, one object per line" if isinstance(
                    e, json.JSONDecodeError) and line.lstrip()[:1] in "[{" else ""
                raise ConfigError(f"{path}:{lineno}: not a {kind} task record "
                                  f"({type(e).__name__}: {e}){hint}") from None
            if limit and len(items) >= limit:
                break
    return kind, _some(items, path)


def _some(items: list[Item], path: Path) -> list[Item]:
    if not items:
        raise ConfigError(f"{path}: no task items in the file")
    return items


def _gold(value: Any, choices: int) -> int:
    """The index of the right choice: an integer (or its digits) below ``choices``."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"gold {value!r} is not an index")
    gold = int(value)
    if not 0 <= gold < choices:
        raise ValueError(f"gold {gold} is not one of the {choices} choices (0..{choices - 1})")
    return gold


def _item(rec: dict[str, Any], kind: str, delimiter: str) -> Item:
    if kind in ("mc", "schema"):
        many = rec["choices"] if kind == "mc" else rec["context_options"]
        if not isinstance(many, list) or len(many) < 2:
            raise ValueError(f"{'choices' if kind == 'mc' else 'context_options'} must be a "
                             f"list of 2 or more, not {many!r}")
    if kind == "mc":
        if any(c is None or isinstance(c, (bool, list, dict)) for c in rec["choices"]):
            raise ValueError(f"choices must be text (or numbers), not {rec['choices']!r}")
        choices = [str(c) for c in rec["choices"]]   # numbers as choices are their digits
        return Item([_text(rec, "query")] * len(choices), choices,
                    _gold(rec["gold"], len(choices)), delimiter)
    if kind == "schema":
        ctxs = [_text({"context_options": c}, "context_options") for c in rec["context_options"]]
        return Item(ctxs, [_text(rec, "continuation")] * len(ctxs),
                    _gold(rec["gold"], len(ctxs)), delimiter)
    if kind == "lm":
        return Item([_text(rec, "context")], [_text(rec, "continuation")], 0, delimiter)
    raise ValueError(f"unknown task kind {kind!r}")


def encode_pair(tok: Any, ctx: str, cont: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), together the tokens of the whole text ``ctx +
    cont``, so a continuation is scored as it tokenizes in running text (a byte-level BPE's
    leading space merged into its first word, no SentencePiece word prefix of its own).
    As lm-eval's Hugging Face model does, the context's trailing whitespace goes with the
    continuation; the split is where the whole text's tokens stop agreeing with the
    context's alone (a token merged across the boundary, "?" + "\n", is scored with the
    continuation: lm-eval's plain cut there would drop the newline from what the model
    reads), leaving the continuation one token at least."""
    n = len(ctx) - len(ctx.rstrip())
    if n:
        ctx, cont = ctx[:-n], ctx[-n:] + cont
    whole = tok.encode(ctx + cont)
    head = tok.encode(ctx) if ctx else []
    k = min(common_prefix([head, whole]), len(whole) - 1) if whole else 0
    return whole[:k], whole[k:]


def loglikelihoods(model: torch.nn.Module, tok: Any, pairs: list[tuple[str, str]],
                   batch_size: int = 16, progress: Callable[[int, int], None] | None = None
                   ) -> list[Tail]:
    """For each (context, continuation): the scored continuation tokens (``Tail``), after
    BOS and the context (``encode_pair``): the model reads every document from BOS in
    training, and lm-eval's Hugging Face model of our export adds it too. ``progress`` as
    ``score_tails``'s."""
    encoded = []
    for ctx, cont in pairs:
        head, x = encode_pair(tok, ctx, cont)
        if not x:
            raise ConfigError(f"empty continuation after tokenizing: {cont!r} after {ctx[-40:]!r}")
        encoded.append(([tok.bos_id, *head, *x], len(x)))
    tails = score_tails(model, encoded, seq_len_of(model), device_of(model), batch_size,
                        progress)
    cut = sum(t.tokens < n for t, (_, n) in zip(tails, encoded, strict=True))
    if cut:   # acc_norm still divides by the whole choice's characters
        log0(f"eval: {cut} of {len(pairs)} continuations are longer than the model's context "
             f"({seq_len_of(model)} tokens): scored on their last tokens only")
    return tails


def evaluate(model: torch.nn.Module, tok: Any, name: str, kind: str, items: list[Item],
             batch_size: int = 16, samples: list[dict[str, Any]] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """acc, acc_norm, chance, centered and stderr of ``items``, a task of ``kind``; each
    item's scores appended to ``samples`` when given (what the figures are counted from)."""
    pairs = [p for it in items for p in it.pairs()]
    scores = loglikelihoods(model, tok, pairs, batch_size, progress)
    acc = acc_norm = 0.0
    chance = 0.0
    k = 0
    metric = BUILTIN.get(name, ("", "", "", ""))[3] or "acc"   # a file named as a built-in
    golds: Counter[int] = Counter()
    picks: Counter[int] = Counter()   # the metric's answers, by position
    for i, it in enumerate(items):
        s = scores[k:k + len(it.contexts)]
        k += len(it.contexts)
        if kind == "lm":
            acc += s[0].greedy
            acc_norm += s[0].greedy
            if samples is not None:
                samples.append({"item": i, "logprob": s[0].logprob, "tokens": s[0].tokens,
                                "greedy": s[0].greedy})
            continue
        chance += 1 / len(s)
        # lm-eval's acc_norm: log-likelihood per character of the choice (delimiter excluded)
        chars = [max(1, len(x)) for x in it.continuations]
        pred = int(np.argmax([t.logprob for t in s]))
        pred_norm = int(np.argmax([t.logprob / n for t, n in zip(s, chars, strict=True)]))
        acc += pred == it.gold
        acc_norm += pred_norm == it.gold
        golds[it.gold] += 1
        picks[pred_norm if metric == "acc_norm" else pred] += 1
        if samples is not None:
            samples.append({"item": i, "gold": it.gold, "pred": pred, "pred_norm": pred_norm,
                            "logprob": [t.logprob for t in s], "chars": chars})
    n = len(items)
    res = {"acc": acc / n, "acc_norm": acc_norm / n, "chance": chance / n, "items": n}
    if golds:   # a model answering one position throughout scores the gold's share of it
        res["majority"] = golds.most_common(1)[0][1] / n    # (CommonsenseQA's C: 0.403)
        res["same_choice"] = picks.most_common(1)[0][1] / n
    base = res["chance"]
    res["centered"] = (res[metric] - base) / (1 - base) if base < 1 else float("nan")
    # lm-eval's: the sample standard deviation (n - 1) over the square root of n
    res["stderr"] = math.sqrt(max(res[metric] * (1 - res[metric]), 1e-12) / max(n - 1, 1))
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.items()}


def shot_indices(i: int, n: int, k: int, seed: int = 1234) -> list[int]:
    """The ``k`` few-shot examples of item ``i`` of ``n``: other items, drawn by
    ``random.Random(seed + i)``, the same on every run. The same draw as nanochat's
    ``Random(1234 + i).sample`` over the list of the other indices (sampling a range picks
    the same positions), without building that list for every item."""
    return [j + (j >= i) for j in random.Random(seed + i).sample(range(n - 1), k)]


def with_fewshot(items: list[Item], k: int, sep: str = "\n\n", where: str = "the task"
                 ) -> list[Item]:
    """Each item's contexts prefixed with ``k`` other items of the task, answered (their
    gold context + continuation), chosen by ``shot_indices``."""
    if k <= 0:
        return items
    if len(items) <= k:
        raise ConfigError(f"eval.num_fewshot = {k} needs more than {k} items in {where}, "
                          f"which has {len(items)}: draw fewer examples, or leave the task "
                          "out of eval.tasks")
    out = []
    for i, it in enumerate(items):
        shots = [items[j] for j in shot_indices(i, len(items), k)]
        prefix = "".join(s.contexts[s.gold] + s.delimiter + s.continuations[s.gold] + sep
                         for s in shots)
        out.append(Item([prefix + c for c in it.contexts], it.continuations, it.gold,
                        it.delimiter))
    return out


def check_own_files(cfg: EvalConfig) -> None:
    """Read every task file of one's own in ``cfg.tasks`` (not a built-in's) that exists, as
    the eval stage will: a bad record is its error (file and line) before the stages that
    come first have run (it had come after training). Skipping ones are left to the stage."""
    for spec, (_, path, kind, delim) in zip(cfg.tasks, resolve(cfg.tasks, cfg.tasks_dir),
                                           strict=True):
        if spec not in BUILTIN and path.is_file() and kind != "perplexity":
            items = load(path, kind, delim, cfg.task_limit)[1]
            with_fewshot(items, cfg.num_fewshot, where=f"{path}")


def run_tasks(model: torch.nn.Module, tok: Any, cfg: EvalConfig,
              samples_dir: Path | None = None) -> dict[str, Any]:
    """Every task of ``cfg.tasks`` whose file exists; a missing file is a logged skip (the
    quickstart must run where the shared evaluation files are absent). With
    ``samples_dir``, the per-item scores of each task of items (all but a perplexity
    file's) go to ``<task>.jsonl`` there, so two models can be compared item by item
    without either."""
    results: dict[str, Any] = {}
    todo = list(resolve(cfg.tasks, cfg.tasks_dir))
    with Progress("eval benchmarks", total=len(todo), unit="tasks", every_s=5.0) as bar:
        for name, path, kind, delim in todo:
            bar.update(0, task=name)
            if not path.is_file():   # said in the table, once
                results[name] = {"skipped": f"no file at {path}"}
            elif kind == "perplexity":
                results[name] = perplexity(model, tok, path, cfg.batch_size, cfg.task_limit)
            else:
                kind, items = load(path, kind, delim, cfg.task_limit)
                items = with_fewshot(items, cfg.num_fewshot, where=f"task {name!r} ({path})")
                samples: list[dict[str, Any]] = []
                def scored(done: int, rows: int, name: str = name) -> None:
                    bar.update(0, task=name, scored=f"{done:,}/{rows:,} continuations")

                results[name] = evaluate(model, tok, name, kind, items, cfg.batch_size,
                                         samples, scored)
                results[name]["num_fewshot"] = cfg.num_fewshot
                if samples_dir is not None:
                    samples_dir.mkdir(parents=True, exist_ok=True)
                    (samples_dir / f"{name}.jsonl").write_text(
                        "".join(json.dumps(r) + "\n" for r in samples), encoding="utf-8")
            bar.update(1)
    return results


def perplexity(model: torch.nn.Module, tok: Any, path: Path, batch_size: int,
               limit: int = 0) -> dict[str, Any]:
    """Loss, perplexity and bits per byte of a whole text file (WikiText-2's test split),
    in windows of ``seq_len`` tokens; ``limit`` caps the number of windows. Bits per
    byte compare across tokenizers; per-token perplexity does not."""
    ids = np.asarray(tok.encode(path.read_text(encoding="utf-8")), dtype=np.int64)
    wins = windows(ids, seq_len_of(model))[:limit or None]
    res = score(model, {"text": wins}, np.asarray(tok.token_bytes()), batch_size,
                device_of(model))
    return {"kind": "perplexity", **res["text"]}


COLLAPSED = 0.9   # a share of answers at one position that says more than the accuracy


def table(results: dict[str, Any]) -> str:
    lines = [f"{'task':<16}{'items':>7}{'acc':>8}{'acc_norm':>10}{'chance':>8}{'centered':>10}"]
    if all("skipped" in r or r.get("kind") == "perplexity" for r in results.values()):
        lines = []   # no column of numbers to head (a perplexity file's row says its own)
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name:<16}  skipped: {r['skipped']}")
            continue
        if r.get("kind") == "perplexity":
            lines.append(f"{name:<16}  loss {r['loss']:.4f}  ppl {r['ppl']:.2f}  "
                         f"bpb {r.get('bpb', float('nan')):.4f}  ({r['tokens']:,} tokens)")
            continue
        lines.append(f"{name:<16}{r['items']:>7}{r['acc']:>8.3f}{r['acc_norm']:>10.3f}"
                     f"{r['chance']:>8.3f}{r['centered']:>10.3f}")
        if r.get("same_choice", 0) >= COLLAPSED and r["items"] >= 20:
            lines.append(f"{'':<16}  the same choice position for {r['same_choice']:.0%} of "
                         f"the items: the gold's most common position alone scores "
                         f"{r['majority']:.3f}")
    return "\n".join(lines)
