"""imgcls: train, evaluate, serve and export image classifiers from class folders.

Every command of the ``imgcls`` CLI is a function here, imported lazily so that ``import imgcls`` stays fast::

    import imgcls
    run = imgcls.train(data="photos/", model="resnet18", epochs=10)
    imgcls.evaluate(run.best_weights, split="test")
    for p in imgcls.Predictor(run.best_weights).predict(["a.jpg"]):
        print(p.label, p.confidence)
"""

from __future__ import annotations

from .version import __version__

_LAZY = {
    # train and evaluate
    "train": ("imgcls.engine.train", "train"),
    "TrainResult": ("imgcls.engine.train", "TrainResult"),
    "TrainConfig": ("imgcls.config", "TrainConfig"),
    "distill": ("imgcls.engine.train", "distill"),
    "demo": ("imgcls.engine.demo", "demo"),
    "evaluate": ("imgcls.engine.evaluate", "evaluate"),
    "EvalResult": ("imgcls.engine.evaluate", "EvalResult"),
    "tune": ("imgcls.engine.tune", "tune"),
    # data
    "check": ("imgcls.engine.check", "check"),
    # reports
    "report": ("imgcls.reporting.report", "write_report"),
    "compare": ("imgcls.reporting.compare", "compare_runs"),
    # deploy
    "Predictor": ("imgcls.deploy.predict", "Predictor"),
    "predict": ("imgcls.deploy.predict", "predict"),
    "export": ("imgcls.deploy.export", "export"),
    "benchmark": ("imgcls.deploy.benchmark", "benchmark"),
    "serve": ("imgcls.deploy.serve", "serve"),
    # the rest
    "list_model_names": ("imgcls.models.factory", "list_model_names"),
    "load_checkpoint": ("imgcls.record.checkpoint", "load_checkpoint"),
    "ImgclsError": ("imgcls.errors", "ImgclsError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
