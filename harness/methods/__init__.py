"""Fine-tuning methods as plugins: one file per method, registered by name."""

from harness.methods.registry import ArmContext, Method, get_method, method_names, register

__all__ = ["ArmContext", "Method", "get_method", "method_names", "register"]
