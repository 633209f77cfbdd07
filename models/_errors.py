"""The recipe's own error; the model files' errors are `edge_sdk`'s.

    ModelRecipeError               the recipe made or was given something it must not ship:
                                   an unreadable checkpoint or graph, an export that
                                   disagrees with torch, a file over the size limit

Verifying and loading a model raise `edge_sdk.ModelError` (a file missing, a graph that
does not load) and `edge_sdk.ModelVerificationError` (a size, sha256 or signature that
does not match), as the device does; onnxruntime's and torch's errors are translated
into these at the boundary.
"""

from __future__ import annotations

__all__ = ["ModelRecipeError"]


class ModelRecipeError(Exception):
    """The recipe produced something it must not ship (a mismatch or a broken limit)."""
