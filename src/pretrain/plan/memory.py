"""Training memory per device, from the config alone: weights, gradients, optimizer state,
activations (with and without activation checkpointing) and the transient working set,
under a parallel layout.

Weights and gradients are kept in fp32 (the loop trains fp32 master weights; on a GPU
autocast runs the matmuls in bf16 and keeps a bf16 copy of each weight while it is used),
AdamW keeps two fp32 moments, Muon one momentum for the hidden matrices.

Activations are counted from what this implementation saves for the backward pass, per
token and layer, in elements (``layer_elements``; ``tests/unit/test_plan.py`` checks the
counts against ``torch.autograd.graph.saved_tensors_hooks`` on real forwards):

- llama: ``6 d + 2 + 3 q + 3 kv + H + 4 h`` -- two RMSNorms (input, rsqrt, normed), the
  inputs of ``wqkv`` and ``w13``, the fused q/k/v output, the rotated q and k, the
  attention output and its log-sum-exp (fused SDPA: nothing quadratic in T), and SwiGLU's
  fused gate/up output, SiLU output and product;
- gpt2: ``8 d + 4 + H + 2 h`` (LayerNorms keep input, mean and rstd; q/k/v; the GELU's
  input and output);
- mla: its latent path, and the math SDPA kernel's attention probabilities, ``H T`` per
  token (quadratic in the sequence: the fused kernels need equal q/k and v head dims);
- with dropout, its masks, and on CPU the math kernel's probabilities (``dropout_bytes``).

Outside the layers: the token ids, the final norm, and either (the plain loss, kept under
tensor parallelism, where the logits are whole on every rank) the head input and the
logits, or (the fused chunked loss that training uses otherwise) the gradient of the head
input, which that loss's forward computes and keeps. With activation checkpointing a layer
keeps only its input (``d``) and one layer's activations are rebuilt at a time. Under
autocast the elements are counted at 2 bytes except what stays fp32 (``layer_bytes``: the
norms, the log-sum-exp, what is outside the layers; these are eager counts, a compiled
model keeps less; README). The working set adds the fused loss's chunk of logits (or the
plain loss's two logits-sized gradients that backward starts with), under FSDP one block's
gathered weights and the root's, under DDP its gradient buckets.
Activations and gradients are not all alive at once: the forward ends holding the
activations and the loss's working set (the fused loss has the head's gradient by then),
backward frees a layer's activations as it fills that layer's gradients and ends holding
the gradients (and one layer's rebuilt activations under checkpointing); the peak is the
larger end, and ``overlap`` is what the sum of the parts counts twice. Not so when a step
accumulates micro-batches (``grad_accum``, a pipeline's microbatches): the gradients then
stay alive through the later forwards, and the parts add up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..model.config import LOSS_CHUNK_TOKENS, ModelConfig

GB = 1e9


@dataclass
class Split:
    """How the work is split (``train.parallel``'s degrees) and what runs per rank."""

    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    sequence_parallel: bool = True
    microbatches: int = 1          # pipeline microbatches per batch
    schedule: str = "1F1B"

    @property
    def devices(self) -> int:
        return self.dp_replicate * self.dp_shard * self.tp * self.pp

    def name(self) -> str:
        parts = [f"{n} {v}" for n, v in (("DDP", self.dp_replicate if self.dp_shard == 1 else 0),
                                          ("replicate", self.dp_replicate if self.dp_shard > 1 else 0),
                                          ("FSDP", self.dp_shard), ("TP", self.tp), ("PP", self.pp))
                 if v > 1]
        return " x ".join(parts) or "1 device"


@dataclass
class Memory:
    """Bytes per device (the most loaded one: a pipeline's first stage)."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    working: float
    # what is never alive at once, subtracted: the forward ends with the activations and
    # the loss's working set, backward frees them as the gradients fill, and ends with
    # the gradients (and, with activation checkpointing, one layer's rebuilt activations)
    overlap: float = 0.0

    @property
    def total(self) -> float:
        return (self.weights + self.grads + self.optimizer + self.activations + self.working
                - self.overlap)

    def as_gb(self) -> dict[str, float]:
        """The parts in GB, the overlap negative: they add up to the total."""
        parts = {**asdict(self), "overlap": -self.overlap, "total": self.total}
        return {k: round(v / GB, 3) + 0.0 for k, v in parts.items()}   # + 0.0: no "-0" shown


def norm_elements(cfg: ModelConfig) -> int:
    """What one norm saves, per token: a LayerNorm its input, mean and rstd; an RMSNorm
    its input, rsqrt and normed output. All fp32 under autocast."""
    return cfg.d_model + 2 if cfg.arch == "gpt2" else 2 * cfg.d_model + 1


def layer_elements(cfg: ModelConfig) -> float:
    """Activation elements one layer saves for backward, per token (see the module doc)."""
    d, H, h, T = cfg.d_model, cfg.n_heads, cfg.hidden, cfg.seq_len
    mlp = d + (2 * h if cfg.arch == "gpt2" else 4 * h)   # fc/w13 input + activations
    norms = 2 * norm_elements(cfg)
    if cfg.arch == "gpt2":
        # two LayerNorms, c_attn input, q/k/v, attention out + lse
        return norms + d + 3 * d + d + H + mlp
    if cfg.arch == "llama":
        q, kv = H * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        return norms + d + (q + 2 * kv) + q + kv + q + H + mlp
    qk, v, r = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    q_path = 3 * cfg.q_lora_rank + 1 if cfg.q_lora_rank else 0  # q_a output, its norm, q_b input
    latent = (r + cfg.qk_rope_head_dim) + 1 + 2 * r             # kv_a output, norm, kv_b input
    attention = 2 * H * qk + 2 * H * v + H * T                   # q, k, v, out, probabilities
    return norms + d + q_path + latent + attention + mlp


def layer_bytes(cfg: ModelConfig, low_precision: bool, cpu: bool) -> float:
    """Bytes one layer saves for backward, per token: ``layer_elements`` at 4 bytes, or
    under autocast (``low_precision``) what it keeps in bf16/fp16 and what it keeps in
    fp32: the norms' inputs, statistics and outputs (the residual stream stays fp32, and
    the norms compute in fp32), the fused kernel's log-sum-exp; an MLA layer also casts
    its normed input twice (the q and latent projections each keep their own copy), and
    on CPU, where autocast leaves attention alone, its q/k/v and probabilities stay fp32
    (RoPE's fp32 tables promote q and k). Checked against ``saved_tensors_hooks`` under
    CPU autocast (``tests/unit/test_plan.py``): counted at 2 bytes, llama 1.22x, gpt2
    1.15x, mla 1.45x of the estimate."""
    elements = layer_elements(cfg)
    if not low_precision:
        return 4 * elements
    d, H, h, T = cfg.d_model, cfg.n_heads, cfg.hidden, cfg.seq_len
    norms = 2 * norm_elements(cfg)
    if cfg.arch != "mla":   # the norms and the log-sum-exp in fp32
        return 2 * elements + 2 * (norms + H)
    qk, v, r = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    r_q = cfg.q_lora_rank
    # per latent norm: its input's fp32 copy and statistic, the normed output and the next
    # projection's input in the low precision
    q_path = 8 * r_q + 4 if r_q else 0
    latent = 8 * r + 4
    if cpu:   # q, k, the probabilities and v in fp32; the output cast for wo
        attention = 4 * (2 * H * qk + H * T + H * v) + 2 * H * v
    else:
        attention = 2 * (2 * H * qk + 2 * H * v + H * T)
    return 4 * norms + 2 * 2 * d + q_path + latent + attention + 2 * (d + 4 * h)


def dropout_bytes(cfg: ModelConfig, math_attention: bool, act_bytes: int = 4) -> float:
    """Bytes per token one layer saves for dropout (``model.dropout > 0``): the masks of the
    two residual dropouts (a byte an element) and, where attention runs the math SDPA
    kernel (``math_attention``: on CPU, which has no fused kernel with dropout; always for
    MLA), what it saves per head and key: the scores, the probabilities, their mask and
    their dropped copy, 13 bytes in fp32 (``saved_tensors_hooks`` counted 12.7-12.9), 7 in
    bf16 (``act_bytes`` 2: MLA's on a GPU; CPU autocast keeps them fp32); the fused GPU
    kernels keep only their random state. Measured on CPU without it: 1.55x
    the estimate at T 512 and 2.28x at T 1024."""
    if not cfg.dropout:
        return 0.0
    T, H = cfg.seq_len, cfg.n_heads
    if cfg.arch == "mla":           # its probabilities are counted already (layer_elements)
        attention = H * T * (2 * act_bytes + 1)
    else:                           # the fused kernel's H (log-sum-exp) stays counted
        attention = H * T * (3 * act_bytes + 1) if math_attention else 0
    return 2 * cfg.d_model + attention


def outside_elements(cfg: ModelConfig, fused_loss: bool = False) -> float:
    """Per token, outside the layers: token ids (8 bytes), the final norm and, with the
    plain loss, the head's input and the logits (kept for the loss, and alive while
    backward runs); with the fused chunked loss (``model/loss.py``) instead only the
    gradient of the head's input, which its forward computes and keeps."""
    return 2 + norm_elements(cfg) + cfg.d_model + (0 if fused_loss else 2 * cfg.vocab_size)


def loss_working_bytes(cfg: ModelConfig, tokens: int, low_precision: bool,
                       chunk: int = LOSS_CHUNK_TOKENS) -> float:
    """The fused loss's working set at its peak, in eager mode (compiled, its elementwise
    steps fuse and it holds less): one chunk's logits from the matmul (2 bytes under
    autocast), their fp32 copy, the fp32 log-probabilities and the low-precision softmax
    gradient (the fp32 ones are the same tensors without autocast), plus the head's
    gradient, accumulated and per chunk, in fp32."""
    per_logit = 2 + 4 + 4 + 2 if low_precision else 4 + 4
    return min(chunk, tokens) * cfg.padded_vocab * per_logit + 2 * 4 * cfg.padded_vocab * cfg.d_model


def _split_params(cfg: ModelConfig, layout: Split) -> float:
    """Parameters one device holds (the first pipeline stage, the most loaded with its
    embedding), before data-parallel sharding."""
    d, L = cfg.d_model, cfg.n_layers
    per_layer = (cfg.num_params(embeddings=False) - d) / L   # less the final norm
    embed = cfg.padded_vocab * d + (cfg.seq_len * d if cfg.arch == "gpt2" else 0)
    head = 0 if cfg.tied else cfg.padded_vocab * d
    layers = math.ceil(L / layout.pp) * per_layer
    stage = layers + embed + (head + d if layout.pp == 1 else 0)
    return stage / layout.tp


# a compiled model keeps fewer activations than the eager counts (inductor recomputes norms
# and elementwise steps in backward: 0.70x for llama, 0.97x for gpt2 under CPU bf16
# autocast): sized with the least share seen
COMPILED_ACTIVATIONS = 0.7


def kept_share(compiled: bool) -> float:
    """``estimate``'s ``activation_share`` for a model compiled (``train.compile``) or not."""
    return COMPILED_ACTIVATIONS if compiled else 1.0


# the share of a device's memory a run is advised to fill: the estimate is within 10% of
# measured peaks (tests/unit/test_plan.py), so a batch sized to the last byte can be killed
MARGIN = 0.9


def estimate(cfg: ModelConfig, batch: int, *, layout: Split | None = None,
             checkpointing: bool = False, optimizer: str = "adamw",
             precision: str = "fp32", fused_loss: bool | None = None,
             grad_accum: int = 1, cpu: bool | None = None,
             activation_share: float = 1.0) -> Memory:
    """Memory per device for micro-batches of ``batch`` sequences of ``cfg.seq_len`` tokens
    (per data-parallel rank). ``precision``: "fp32" (CPU) or "bf16"/"fp16" (autocast; "fp8",
    whose float8 linears run inside bf16 autocast, counts as bf16).
    ``fused_loss``: the head and cross-entropy in chunks, as training runs them except
    under tensor parallelism (the default: fused unless ``layout.tp > 1``). ``grad_accum``
    micro-batches a step: above 1 (and under pipeline parallelism, whose microbatches
    accumulate too) the gradients are alive through the later forwards: no overlap.
    ``cpu``: whether it runs on a CPU, whose attention falls back to the math kernel with
    dropout (None: fp32 is taken for a CPU, the rest for a GPU). ``activation_share``: the
    share of these (eager) activations kept, for a compiled model that keeps fewer; the
    peak follows (the overlap with the gradients is taken from them)."""
    layout = layout or Split()
    fused = layout.tp == 1 if fused_loss is None else fused_loss
    params = _split_params(cfg, layout)
    per_layer_params = (cfg.num_params(embeddings=False) - cfg.d_model) / cfg.n_layers
    shard = layout.dp_shard
    weights, grads = 4 * params / shard, 4 * params / shard
    if optimizer == "muon":  # momentum for hidden matrices, AdamW's two moments for the rest
        hidden = math.ceil(cfg.n_layers / layout.pp) * per_layer_params / layout.tp  # this stage's
        opt = (4 * hidden + 8 * (params - hidden)) / shard
    else:
        opt = 8 * params / shard
    low = precision in ("bf16", "fp16", "fp8")
    act_bytes = 2 if low else 4
    on_cpu = not low if cpu is None else cpu
    tokens = batch * cfg.seq_len
    L = math.ceil(cfg.n_layers / layout.pp)
    if layout.pp > 1:  # micro-batches in flight on the first stage
        in_flight = layout.microbatches if layout.schedule == "GPipe" else min(layout.pp, layout.microbatches)
        tokens = tokens * in_flight // layout.microbatches
    # bytes per token; the residual stream, the norms and what is outside the layers stay
    # fp32 under autocast
    per_layer = layer_bytes(cfg, low, on_cpu) / layout.tp
    norm = norm_elements(cfg)
    if layout.tp > 1:   # the column-parallel matmuls' inputs are gathered whole; without
        # sequence parallelism the norms (and the residual) are whole on each rank too
        whole = 2 * cfg.d_model * act_bytes + (0 if layout.sequence_parallel else 2 * 4 * norm)
        per_layer += whole * (1 - 1 / layout.tp)
    if checkpointing:   # each layer's input, and one layer rebuilt
        layers = L * 4 * cfg.d_model + per_layer
    else:
        layers = L * per_layer
    # under tensor parallelism the plain loss's logits are whole on every rank (the head's
    # output is gathered, as training runs it), and so is the head's input; the rest split
    whole = (0 if fused else 2 * cfg.vocab_size) + (cfg.d_model if layout.tp > 1 else 0) \
        + (norm if layout.tp > 1 and not layout.sequence_parallel else 0)   # the head's input
    outside = 4 * ((outside_elements(cfg, fused) - whole) / layout.tp + whole)
    activations = tokens * (layers + outside)
    # per token and layer; CPU autocast leaves the math kernel in fp32 (bf16 saved 0.93x fp32)
    drop = dropout_bytes(cfg, on_cpu, 4 if on_cpu else act_bytes) / layout.tp
    if drop:   # and the embeddings' mask, a byte an element
        activations += tokens * ((1 if checkpointing else L) * drop + cfg.d_model)
    activations *= activation_share
    if fused:   # the loss's forward: one chunk of logits at a time, beside the activations
        working = loss_working_bytes(cfg, batch * cfg.seq_len, act_bytes == 2)
        if checkpointing:  # freed before backward rebuilds a layer: the larger of the two
            working = max(0.0, working - tokens * per_layer * activation_share)
    else:  # backward starts with two gradients of the logits' size alive (the loss's, then
        # the log-softmax's), beside the saved activations; whole under tensor parallelism
        working = 2 * 4 * batch * cfg.seq_len * cfg.padded_vocab
    # the peak is the larger of the forward's end and the backward's (module doc)
    rebuilt = tokens * (per_layer + drop) * activation_share if checkpointing else 0.0
    accumulates = grad_accum > 1 or layout.pp > 1
    overlap = 0.0 if accumulates else min(grads, activations + working - rebuilt)
    if low:
        working += 2 * params  # autocast's low-precision copies of the weights in use
    if shard > 1:  # FSDP: one block gathered at a time, and the root's parameters
        working += 4 * (per_layer_params / layout.tp + (params - L * per_layer_params / layout.tp))
    if layout.dp_replicate > 1 and shard == 1:
        working += 4 * params  # DDP's gradient buckets
    return Memory(weights, grads, opt, activations, working, overlap)


def largest_batch(cfg: ModelConfig, memory_bytes: float, **kw: object) -> int:
    """The largest micro-batch (sequences) whose estimate fits ``memory_bytes``; 0 if none."""
    lo, hi = 0, 1
    while estimate(cfg, hi, **kw).total <= memory_bytes:  # type: ignore[arg-type]
        lo, hi = hi, hi * 2
        if hi > 1 << 20:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(cfg, mid, **kw).total <= memory_bytes:  # type: ignore[arg-type]
            lo = mid
        else:
            hi = mid
    return lo
