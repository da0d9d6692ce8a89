"""Planning: parameters, FLOPs, memory per device, time and cost, compute-optimal sizes and
scaling laws fitted from the user's own runs (``pretrain plan``, ``pretrain sweep``).
Reads model configs only; imports no torch."""
