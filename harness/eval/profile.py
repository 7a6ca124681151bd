"""Cost profiling: peak memory (CUDA allocator or process RSS), parameter counts, sizes."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


class MemoryProfiler:
    """CUDA: peak allocated/reserved minus what was held at start. CPU: peak RSS of this process
    (the kernel's high-water mark, so no sampling gap can miss a short spike)."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_allocated = torch.cuda.memory_allocated()
            self.base_reserved = torch.cuda.memory_reserved()

    def peaks_mb(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            return {
                "peak_memory_mb": round((torch.cuda.max_memory_allocated() - self.base_allocated) / 2**20, 1),
                "peak_cuda_reserved_mb": round((torch.cuda.max_memory_reserved() - self.base_reserved) / 2**20, 1),
            }
        return {"peak_memory_mb": round(peak_rss_mb(), 1)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (exec), in MiB.

    Linux: VmHWM of /proc/self/status, the kernel's high-water mark of this process image. Not
    getrusage's ru_maxrss: Linux carries that over fork and exec, so an arm process started by a
    big parent (a test runner with torch loaded) would report the parent's memory as its own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def param_count(p) -> int:
    """Parameters a tensor stands for. bitsandbytes packs two 4-bit weights per byte of its
    storage dtype, so a Params4bit's numel is smaller than the weight it holds."""
    if type(p).__name__ == "Params4bit":
        return p.numel() * 2 * p.element_size()
    return p.numel()


def parameter_counts(model) -> dict[str, float]:
    trainable = sum(param_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(param_count(p) for p in model.parameters())
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 4) if total else 0.0,
    }


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def dir_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def saved_mb(model, saved_dir: Path | None, *, trained: bool) -> float:
    """MiB of what the method saves: the adapter folder when it wrote one; otherwise the bytes of
    the trainable parameters (full fine-tuning must ship all of them); 0 when nothing is trained."""
    if saved_dir is not None and Path(saved_dir).exists():
        return round(dir_size_bytes(saved_dir) / 2**20, 3)
    if not trained:
        return 0.0
    size = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return round(size / 2**20, 3)
