"""lm-evaluation-harness on our model: an ``lm_eval.api.model.LM`` backed by the same
log-likelihood code as our own scorer (``tasks.loglikelihoods``), so the two agree
number for number on the same requests.

The eval stage runs it when ``eval.harness`` names lm-eval tasks (needs the ``[eval]``
extra); the results are the stage's ``harness.json``. ``eval.harness_include`` adds a
folder of task YAMLs, which is how tasks run offline: a YAML with ``dataset_path: json``
and ``dataset_kwargs: {data_files: ...}`` reads a local file instead of the Hub.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError
from ..model.generate import generate
from .config import EvalConfig
from .scoring import device_of, score_tails
from .tasks import loglikelihoods


def make_lm(model: Any, tok: Any, batch_size: int = 16) -> Any:
    try:
        from lm_eval.api.model import LM
    except ImportError:
        raise ConfigError("eval.harness needs lm-evaluation-harness: pip install 'pretrain[eval]'"
                          ) from None

    class PretrainLM(LM):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model, self.tok, self.bs = model, tok, batch_size
            self.seq_len = model.cfg.seq_len

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False
                          ) -> list[tuple[float, bool]]:
            pairs = [tuple(r.args) for r in requests]
            return [(t.logprob, t.greedy)
                    for t in loglikelihoods(self.model, self.tok, pairs, self.bs)]

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                                  ) -> list[float]:
            """Log-likelihood of each whole text after BOS, in windows of seq_len tokens
            (each window conditioned on the previous window's tokens)."""
            rows: list[tuple[list[int], int]] = []
            spans = []
            for r in requests:
                ids = [self.tok.bos_id, *self.tok.encode(r.args[0])]
                first = len(rows)
                for start in range(1, len(ids), self.seq_len):
                    end = min(start + self.seq_len, len(ids))
                    # the window's tokens, after as much context as the model takes
                    rows.append((ids[max(0, end - 1 - self.seq_len):end], end - start))
                spans.append((first, len(rows)))
            tails = score_tails(self.model, rows, self.seq_len, device_of(self.model), self.bs)
            return [sum(t.logprob for t in tails[a:b]) for a, b in spans]

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            """Greedy, ``self.bs`` requests of one ``max_gen_toks`` at a time (a row's
            greedy output does not depend on the others), each row stopped once its text
            holds one of its ``until`` strings (it had run to ``max_gen_toks``)."""
            out = [""] * len(requests)
            todo: dict[int, list[tuple[int, list[int], list[str], int]]] = {}
            for i, r in enumerate(requests):
                context, kwargs = r.args
                until = kwargs.get("until") or []
                until = [u for u in ([until] if isinstance(until, str) else until) if u]
                # the prompt's end, leaving room for max_gen_toks: as lm-eval's HF model
                # does, so scores compare (generate() would take one token more of context)
                budget = min(int(kwargs.get("max_gen_toks", 64)), self.seq_len - 1)
                if budget >= 1:
                    prompt = [self.tok.bos_id, *self.tok.encode(context)][-(self.seq_len - budget):]
                    # a stop completed by the latest token starts within its longest
                    # string's bytes before it: the last tokens that hold that many (each
                    # a byte or more; a cut character decodes to U+FFFD)
                    window = max((len(u.encode()) for u in until), default=0) + 4
                    todo.setdefault(budget, []).append((i, prompt, until, window))
            for budget, rows in todo.items():
                for at in range(0, len(rows), self.bs):
                    batch = rows[at:at + self.bs]

                    def stop(b: int, new: list[int], batch: Any = batch) -> bool:
                        _, _, until, window = batch[b]
                        text = self.tok.decode(new[-window:]) if until else ""
                        return any(s in text for s in until)

                    news = generate(self.model, [p for _, p, _, _ in batch], budget,
                                    temperature=0.0, stop_ids=(self.tok.eos_id,), stop=stop)
                    for (i, prompt, until, _), new in zip(batch, news, strict=True):
                        text = self.tok.decode_after(prompt, new)
                        for s in until:
                            text = text.split(s)[0]
                        out[i] = text
            return out

    return PretrainLM()


def run(model: Any, tok: Any, cfg: EvalConfig) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` of ``cfg.harness`` on our model: task -> metrics."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError("eval.harness needs lm-evaluation-harness: pip install 'pretrain[eval]'"
                          ) from None
    res = lm_eval.simple_evaluate(model=make_lm(model, tok, cfg.batch_size), tasks=cfg.harness,
                                  num_fewshot=cfg.num_fewshot or None,
                                  limit=cfg.task_limit or None,
                                  task_manager=task_manager(cfg), log_samples=False,
                                  bootstrap_iters=0)
    if res is None:
        return {}
    return {name: {_metric(k): v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and "stderr" not in k}
            for name, metrics in res["results"].items()}


def task_manager(cfg: EvalConfig) -> Any:
    """lm-eval's index of the tasks to run. Its own thousands of task YAMLs take 12 s to
    index (lm-eval 0.4.13 here); where every task ``cfg.harness`` names is a plain task of
    ``eval.harness_include``, the index of that folder alone serves (``include_defaults``:
    lm-eval 0.4.3 on, the floor ``pyproject.toml`` sets; with 0.4.13 the folder's task wins
    a name lm-eval has too in either index, as it did not in some earlier 0.4s)."""
    from lm_eval.tasks import TaskManager
    if cfg.harness_include:
        own = TaskManager(include_path=cfg.harness_include, include_defaults=False)
        if all(_plain_task(own.task_index.get(name)) for name in cfg.harness):
            return own
    return TaskManager(include_path=cfg.harness_include or None)


def _plain_task(entry: Any) -> bool:
    """Whether an entry of lm-eval's task index is a task, not a group or tag (which may
    name lm-eval's own tasks, found only in its whole index). The index holds ``Entry``
    objects with a ``kind`` (lm-eval 0.4.13 here), dicts with a ``type`` in earlier 0.4s."""
    if isinstance(entry, dict):
        return entry.get("type") == "task"
    return getattr(getattr(entry, "kind", None), "name", None) == "TASK"


def _metric(key: str) -> str:
    """lm-eval's "metric,filter" as a results key: "acc" for the plain filter ("none"),
    "exact_match/strict-match" where a task reports one metric under several filters."""
    metric, _, filt = key.partition(",")
    return metric if filt in ("", "none") else f"{metric}/{filt}"
