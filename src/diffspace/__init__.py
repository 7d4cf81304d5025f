"""diffspace: diffusion generative models whose forward process is a design choice.

    import diffspace
    model = diffspace.load("runs/quickstart/model")     # a model folder or a run directory
    images = model.sample(16, seed=0)                   # (16, C, H, W) in model space
    bits = model.nll(images)                            # negative ELBO in bits/dim, per image
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """`diffspace.load` (imported on first use, so that `import diffspace` stays light)."""
    if name == "load":
        from diffspace.model import load

        return load
    raise AttributeError(f"module 'diffspace' has no attribute {name!r}")
