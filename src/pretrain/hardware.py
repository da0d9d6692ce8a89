"""Accelerators: dense peak throughput per precision, memory, and an indicative price.

One table for the two places that need a peak: the training loop's MFU on a GPU (matched
by the device name torch reports) and ``pretrain plan``'s time and cost. Peaks are the
vendors' dense figures (no 2:4 sparsity), in TFLOP/s; ``fp32`` is the non-tensor-core
rate, ``tf32`` the tensor-core one; consumer cards' bf16 is with fp32 accumulation. Prices
are indicative on-demand cloud dollars per GPU-hour (late 2025); ``pretrain plan --price``
overrides them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import ConfigError


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gb: float
    peak_tflops: dict[str, float]   # precision -> dense TFLOP/s
    dollars_per_hour: float
    match: tuple[str, ...]          # substrings of torch.cuda.get_device_name()
    cc_major: int = 0               # torch.cuda.get_device_capability()[0]

    @property
    def fp8_training(self) -> bool:
        """Whether training runs ``train.precision = "fp8"`` here (Hopper or newer)."""
        return "fp8" in self.peak_tflops and self.cc_major >= FP8_CC_MAJOR

    def peak(self, precision: str) -> float:
        """FLOP/s at ``precision`` (bf16, fp16, fp8, tf32, fp32)."""
        if precision not in self.peak_tflops:
            raise ConfigError(f"{self.name} has no {precision} rate in the table; it has "
                              + ", ".join(self.peak_tflops))
        return self.peak_tflops[precision] * 1e12


# the compute capability training asks of fp8 (torchao's float8 linears): Hopper or newer.
# Ada (8.9) has fp8 tensor cores and a rate in the table, but is not where it is run here
FP8_CC_MAJOR = 9

_HOPPER = {"bf16": 989.0, "fp16": 989.0, "fp8": 1979.0, "tf32": 494.5, "fp32": 66.9}
ACCELERATORS: dict[str, Accelerator] = {
    "h100": Accelerator("NVIDIA H100 SXM 80 GB", 80, _HOPPER, 2.5, ("H100 80GB HBM3", "H100 SXM"),
                        cc_major=9),
    "h100-pcie": Accelerator("NVIDIA H100 PCIe 80 GB", 80,
                             {"bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "tf32": 378.0,
                              "fp32": 51.2}, 2.2, ("H100 PCIe",), cc_major=9),
    "h100-nvl": Accelerator("NVIDIA H100 NVL 94 GB", 94,
                            {"bf16": 835.0, "fp16": 835.0, "fp8": 1670.0, "tf32": 417.5,
                             "fp32": 60.0}, 2.5, ("H100 NVL",), cc_major=9),
    "h200": Accelerator("NVIDIA H200 141 GB", 141, _HOPPER, 3.5, ("H200",), cc_major=9),
    "b200": Accelerator("NVIDIA B200 180 GB", 180,
                        {"bf16": 2250.0, "fp16": 2250.0, "fp8": 4500.0, "tf32": 1100.0,
                         "fp32": 80.0}, 6.0, ("B200",), cc_major=10),
    "a100": Accelerator("NVIDIA A100 SXM 80 GB", 80,
                        {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 1.5,
                        ("A100-SXM4-80GB", "A100 80GB"), cc_major=8),
    "a100-40gb": Accelerator("NVIDIA A100 40 GB", 40,
                             {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 1.2,
                             ("A100-SXM4-40GB", "A100-PCIE-40GB"), cc_major=8),
    "l40s": Accelerator("NVIDIA L40S 48 GB", 48,
                        {"bf16": 362.0, "fp16": 362.0, "fp8": 733.0, "tf32": 183.0,
                         "fp32": 91.6}, 1.0, ("L40S",), cc_major=8),
    "l40": Accelerator("NVIDIA L40 48 GB", 48,
                       {"bf16": 181.0, "fp16": 181.0, "fp8": 362.0, "tf32": 90.5, "fp32": 90.5},
                       0.9, ("L40",), cc_major=8),
    "l4": Accelerator("NVIDIA L4 24 GB", 24,
                      {"bf16": 121.0, "fp16": 121.0, "fp8": 242.0, "tf32": 60.0, "fp32": 30.3},
                      0.8, ("L4",), cc_major=8),
    "rtx4090": Accelerator("NVIDIA GeForce RTX 4090 24 GB", 24,
                           {"bf16": 165.2, "fp16": 165.2, "fp8": 330.3, "tf32": 82.6,
                            "fp32": 82.6}, 0.5, ("RTX 4090",), cc_major=8),
    "mi300x": Accelerator("AMD Instinct MI300X 192 GB", 192,
                          {"bf16": 1307.0, "fp16": 1307.0, "fp8": 2615.0, "tf32": 654.0,
                           "fp32": 163.4}, 2.5, ("MI300X",), cc_major=9),
}


def get(name: str) -> Accelerator:
    key = name.lower()
    if key not in ACCELERATORS:
        raise ConfigError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}")
    return ACCELERATORS[key]


def detect(device_name: str) -> Accelerator | None:
    """The table's entry for a device name as torch reports it, if there is one. A match is
    a whole word of the name ("L4" is not "L40", "L40" is not "L40S")."""
    for acc in ACCELERATORS.values():
        if any(re.search(rf"(?<![\w-]){re.escape(m)}(?![\w])", device_name, re.IGNORECASE)
               for m in acc.match):
            return acc
    return None
