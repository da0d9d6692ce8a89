"""Pipeline parallelism: the layers split into ``pp`` stages, one per pipeline rank, run
by ``torch.distributed.pipelining`` (1F1B or GPipe over ``pp_microbatches``).

A stage is the whole model with what it does not hold removed: the first keeps the
embedding, the last the final norm and the head, and each a contiguous run of layers
under their own names (``layers`` is a dict), so a stage's state dict uses the full
model's names and checkpoints reshard across layouts. The pipeline's loss is the mean
over each microbatch's scored tokens, averaged over microbatches: with equal microbatches
(every token scored in training) that is one process's loss on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import distributed
from ..eval.loss import NO_PREFIX, metrics, prefix_bytes
from ..model.transformer import Transformer


def stage_layers(n_layers: int, pp: int, stage: int) -> range:
    """The layers of ``stage``: an even split, the first stages one more when it is uneven."""
    per, extra = divmod(n_layers, pp)
    start = stage * per + min(stage, extra)
    return range(start, start + per + (stage < extra))


def keep_stage(model: Transformer, stage: int, pp: int) -> None:
    """Remove from ``model`` what pipeline ``stage`` of ``pp`` does not hold."""
    keep = {str(i) for i in stage_layers(model.cfg.n_layers, pp, stage)}
    for key in [k for k in model.layers if k not in keep]:
        del model.layers[key]
    if stage > 0:
        model.embed = None  # type: ignore[assignment]
        model.pos_embed = None
    if stage < pp - 1:
        model.norm = None  # type: ignore[assignment]
        model.head = None  # type: ignore[assignment]


class _Stage(nn.Module):
    """What the schedule runs: the stage's tensor output (hidden states, or the logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: the last stage's logits are a view of the padded vocabulary's, and
        # torch 2.11's schedules check an output's strides against a contiguous tensor of
        # its shape (a PipeliningShapeError at the first evaluation); on the last stage only
        # with a padded vocabulary is this a copy
        return self.net(x)[0].contiguous()  # type: ignore[no-any-return]


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the scored tokens (a microbatch of padding only counts 0, not NaN)."""
    total = Transformer.loss(logits, targets, reduction="sum")
    return total / (targets >= 0).sum().clamp(min=1)


class Pipeline:
    """One rank's stage and its schedule. ``step`` trains on a batch, ``nll`` scores one."""

    def __init__(self, net: nn.Module, stage: int, pp: int, microbatches: int, schedule: str,
                 device: torch.device, group: Any):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        self.first, self.last, self.microbatches = stage == 0, stage == pp - 1, microbatches
        self.device, self.net = device, net
        kind = Schedule1F1B if schedule == "1F1B" else ScheduleGPipe
        self.schedule = kind(PipelineStage(_Stage(net), stage, pp, device, group=group),
                             microbatches, loss_fn=_loss)
        # scoring runs a stage and schedule of its own over the same module: a stage makes
        # its receive buffers at its first run, and in torch 2.11 they need gradients only
        # if that run had a backward, so an evaluation first (step 0) left the training
        # schedule's without (its first backward then failed with "gradients None")
        self.scorer = kind(PipelineStage(_Stage(net), stage, pp, device, group=group),
                           microbatches, loss_fn=_loss)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """Forward and backward of the batch; its mean loss on the last stage, else None."""
        losses: list[torch.Tensor] = []
        self._run(self.schedule.step, x, y, losses)
        return float(torch.stack(losses).mean().detach()) if self.last else None

    @torch.no_grad()
    def nll(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """Summed negative log-likelihood of the batch's scored targets, on the last stage."""
        losses: list[torch.Tensor] = []
        self._run(self.scorer.eval, x, y, losses)
        if not self.last:
            return None
        counts = [int((c >= 0).sum()) for c in y.tensor_split(self.microbatches)]
        return sum(float(loss) * n for loss, n in zip(losses, counts, strict=True))

    def score(self, val: dict[str, list[Any]], token_bytes: Any, rows: int, T: int,
              d: distributed.Dist, doc_start: tuple[int, int] = NO_PREFIX
              ) -> dict[str, dict[str, float]]:
        """The held-out metrics of ``val`` (windows by domain) through the pipeline: batches
        of the training shape (``rows`` x ``T``: the stages' buffers have that shape),
        padding scored as nothing; the last stage's sums shared with every rank."""
        nbytes = torch.as_tensor(token_bytes) if token_bytes is not None else None
        training = self.net.training
        self.net.eval()   # no dropout while scoring (nor its draws from training's generator)
        try:
            sums = self._sums(val, nbytes, rows, T, doc_start)
        finally:
            self.net.train(training)
        shared = distributed.mean([s[0] for s in sums], d, self.device,
                                  weight=1.0 if self.last else 0.0)
        out = {k: metrics(n, t, b) for k, n, (_, t, b) in zip(val, shared, sums, strict=True)}
        out["all"] = metrics(sum(shared), sum(s[1] for s in sums), sum(s[2] for s in sums))
        return out

    def _sums(self, val: dict[str, list[Any]], nbytes: torch.Tensor | None, rows: int, T: int,
              doc_start: tuple[int, int]) -> list[tuple[float, int, int]]:
        """Each domain's summed NLL (on the last stage; 0 elsewhere), tokens and bytes."""
        sums = []
        for wins in val.values():
            nll, tokens, n_bytes = 0.0, 0, 0
            for i in range(0, len(wins), rows):
                xy = torch.full((rows, T + 1), -1, dtype=torch.int64)
                for r, w in enumerate(wins[i:i + rows]):
                    xy[r, :len(w)] = torch.as_tensor(w)
                x, y = xy[:, :-1].clamp(min=0), xy[:, 1:]
                nll += self.nll(x.to(self.device), y.to(self.device)) or 0.0
                tokens += int((y >= 0).sum())
                n_bytes += int(nbytes[y[y >= 0]].sum()) if nbytes is not None else 0
            n_bytes -= prefix_bytes(wins, doc_start) if nbytes is not None else 0
            sums.append((nll, tokens, n_bytes))
        return sums

    def _run(self, fn: Any, x: torch.Tensor, y: torch.Tensor, losses: list[torch.Tensor]) -> None:
        # contiguous: a batch is a view of its (B, T + 1) windows, whose strides torch
        # 2.11 checks against a contiguous input's
        args = (x.contiguous(),) if self.first else ()
        if self.last:
            fn(*args, target=y, losses=losses)
        else:
            fn(*args)
