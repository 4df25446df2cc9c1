"""imgcls: train, evaluate, serve and export image classifiers from class folders.

The public API is imported lazily so that ``import imgcls`` stays fast::

    import imgcls
    run = imgcls.train(data="photos/", model="resnet18", epochs=10)
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "train": ("imgcls.trainer", "train"),
    "TrainResult": ("imgcls.trainer", "TrainResult"),
    "TrainConfig": ("imgcls.config", "TrainConfig"),
    "evaluate": ("imgcls.val", "evaluate"),
    "EvalResult": ("imgcls.val", "EvalResult"),
    "ImgclsError": ("imgcls.errors", "ImgclsError"),
    "load_checkpoint": ("imgcls.runs", "load_checkpoint"),
    "list_model_names": ("imgcls.models", "list_model_names"),
    "Predictor": ("imgcls.predict", "Predictor"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
