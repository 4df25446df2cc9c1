"""The ``imgcls`` command: a thin layer that parses flags and calls the public Python API."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from .errors import ImgclsError

TRAIN_HELP = {
    "data": "folder with train/ and val/ (optionally test/) class folders, or one tree of class folders",
    "split": "train,val[,test] fractions for a single tree (default 0.7,0.15,0.15), or a split.csv to reuse",
    "imgsz": "input size in pixels (default: the model's pretrained size)",
    "augment": "training augmentation: none, light (default) or strong",
    "balance": "weight the loss by inverse class frequency, for imbalanced data",
    "model": "any timm model name, or simple_cnn (default efficientnet_lite0); see `imgcls models`",
    "pretrained": "start from pretrained weights (default on)",
    "weights": "starting weights file: a state_dict, .safetensors or checkpoint",
    "freeze": "train only the classifier head (default: on when pretrained)",
    "unfreeze_at": "epoch from which the whole network trains",
    "backbone_lr_mult": "backbone lr = lr x this once unfrozen (default 0.1)",
    "se": "add squeeze-and-excitation blocks to simple_cnn",
    "epochs": "number of epochs (default 30)",
    "batch_size": "images per batch (default 32)",
    "optim": "SGD, Adam or AdamW (default)",
    "lr": "initial lr (default: 1e-2 with a frozen backbone, else 1e-3; x10 for SGD)",
    "lrf": "final lr as a fraction of lr, reached by cosine decay (default 0.01)",
    "warmup_epochs": "linear warmup length in epochs (default 1)",
    "weight_decay": "weight decay (default 0.01)",
    "label_smoothing": "label smoothing (default 0.1)",
    "patience": "stop after this many epochs without val improvement; 0 disables (default 10)",
    "clip_grad": "clip the gradient norm to this value",
    "seed": "random seed for the split, shuffling and initialisation (default 0)",
    "device": "auto (default), cpu, cuda, cuda:N or mps",
    "workers": "data loading processes (default: cores - 1)",
    "amp": "mixed precision on CUDA (default: on when training on CUDA)",
    "compile": "torch.compile the network when training all layers (slow start, faster steps)",
    "runtime": "frozen-backbone and inference passes on CPU: auto (measure, default), torch or onnxruntime",
    "cache": "with a frozen backbone, train the head on cached features (default on; --no-cache turns it off)",
    "cache_views": "augmented views cached per training image, cycled over the epochs (default 4)",
    "project": "parent folder of runs (default runs)",
    "name": "run folder name; repeats become name2, name3, ... (default train)",
    "exist_ok": "write into an existing --project/--name folder",
}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        kind = args[0] if args else hints[f.name]
        help_text = TRAIN_HELP.get(f.name, "")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = {"int": "N", "float": "X", "str": "VALUE"}[kind.__name__]
            parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=metavar, help=help_text)
    parser.add_argument("--cfg", metavar="YAML", help="settings file with the same keys; flags override it")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its weights/last.pt")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, with the fix, and exit status 2 like argparse
        self.exit(2, f"imgcls: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgcls", description="Train, evaluate and deploy image classifiers from class folders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a classifier on class folders")
    _add_train_arguments(p)

    p = sub.add_parser("demo", help="train on built-in handwritten digits (offline, a few minutes on a CPU)")
    p.add_argument("--data", default="data/digits", help="where to write the digit images (default data/digits)")
    p.add_argument("--project", default="runs", help="parent folder of runs (default runs)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")

    p = sub.add_parser("models", help="list model names usable with --model")
    p.add_argument("pattern", nargs="?", help="filter, e.g. 'convnext*' or resnet")
    p.add_argument("--pretrained", action="store_true", help="only models that have pretrained weights in timm")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .trainer import train

        settings = {f: getattr(args, f) for f in TRAIN_HELP if getattr(args, f, None) is not None}
        if args.resume:
            extra = sorted(settings)
            if extra or args.cfg:
                raise ImgclsError(f"--resume continues a run with its saved settings; drop {extra or ['--cfg']}")
            train(resume=args.resume)
        else:
            train(cfg_file=args.cfg, **settings)
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.data, args.project, **({"epochs": args.epochs} if args.epochs else {}))
        return 0
    if args.command == "models":
        from .models import list_model_names

        names = list_model_names(args.pattern, pretrained_only=args.pretrained)
        if not names:
            raise ImgclsError(f"no model name matches {args.pattern!r}")
        print("\n".join(names))
        print(f"# {len(names)} model(s)", file=sys.stderr)
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _run(args)
    except ImgclsError as e:
        print(f"imgcls: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgcls: interrupted; a training run continues with `imgcls train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
