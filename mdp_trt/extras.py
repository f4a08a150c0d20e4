"""The optional parts of mdp-trt and the pip extra that installs each (pyproject.toml).

The core install runs analyze, profile, solve, prune and bench on ONNX Runtime. Whatever needs
more checks here first, before doing any work, so that a missing package is one clear error
naming the extra, not an ImportError from deep inside a run.
"""

from __future__ import annotations

import importlib.util

from mdp_trt.errors import InputError

__all__ = ["EXTRAS", "MissingExtra", "installed", "require"]

# extra -> the modules it provides (what `require` checks)
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision"),
    "plots": ("matplotlib",),
    "mindtpy": ("pyomo",),
    "ray": ("ray",),
    "bench": ("ultralytics", "timm"),
}


class MissingExtra(InputError):
    """A feature's packages are not installed (exit 2); ``extra`` names what installs them."""

    def __init__(self, message: str, *, extra: str, parameters: tuple[str, ...] = ()):
        super().__init__(message, parameters=parameters)
        self.extra = extra


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported: torch takes seconds to load)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken half-install
        return False


def require(extra: str, feature: str, parameters: tuple[str, ...] = ()) -> None:
    """Raise MissingExtra unless every module of ``extra`` is installed; ``feature`` says what
    needs it as the user asked for it ("`mdp-trt export`", "`importance` taylor", with
    ``parameters`` naming the backquoted parameters)."""
    missing = [module for module in EXTRAS[extra] if not installed(module)]
    if missing:
        raise MissingExtra(
            f"{feature} needs {' and '.join(missing)}, which this install does not have: "
            f"pip install 'mdp-trt[{extra}]' (with -c constraints.txt from a checkout)",
            extra=extra, parameters=parameters)
