"""The ``imgcls`` command: a thin layer that parses flags and calls the public Python API.

Every check lives in the API, so ``imgcls X`` and ``imgcls.X(...)`` refuse the same things with the same
message. Training flags, their help and their defaults come from TrainConfig's fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from .errors import ImgclsError

RUNTIME_HELP = "inference runtime on CPU: auto (ONNX Runtime when measured faster), torch or onnxruntime"
DEVICE_HELP = "auto (default), cpu, cuda, cuda:N or mps"


def _default_note(field: dataclasses.Field) -> str:
    if field.default in (None, ""):
        return ""
    if isinstance(field.default, bool):
        return f" (default {'on' if field.default else 'off'})"
    return f" (default {field.default})"


def _add_train_arguments(parser: argparse.ArgumentParser, run_flags: bool = True) -> None:
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kinds = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
        kind = kinds[0] if kinds else hints[field.name]
        text = field.metadata["help"] + _default_note(field)
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif field.metadata.get("repeatable"):
            parser.add_argument(flag, dest=field.name, action="append", default=None, metavar="VALUE", help=text)
        else:
            metavar = {"int": "N", "float": "X", "str": "VALUE"}[kind.__name__]
            parser.add_argument(flag, dest=field.name, type=kind, default=None, metavar=metavar, help=text)
    if run_flags:
        parser.add_argument("--cfg", metavar="YAML", help="settings file with the same keys; flags override it")
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its weights/last.pt")


def _train_settings(args: argparse.Namespace) -> dict:
    from .config import FIELDS

    settings = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    # a repeatable flag (--logger a --logger b) arrives as a list: the setting is one comma-separated text
    return {k: ",".join(v) if isinstance(v, list) else v for k, v in settings.items()}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, with the fix, and exit status 2 like argparse
        self.exit(2, f"imgcls: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgcls", description="Train, evaluate and deploy image classifiers from class folders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _training_commands(sub)
    _evaluation_commands(sub)
    _deployment_commands(sub)
    p = sub.add_parser("models", help="list model names usable with --model")
    p.add_argument("pattern", nargs="?", help="filter, e.g. 'convnext*' or resnet")
    p.add_argument("--pretrained", action="store_true", help="only models that have pretrained weights in timm")
    return parser


def _training_commands(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on class folders")
    _add_train_arguments(p)

    p = sub.add_parser("distill", help="train a (smaller) student model from a trained teacher's soft targets")
    _add_train_arguments(p)

    p = sub.add_parser("demo", help="train on built-in handwritten digits (offline, about a minute on a CPU)")
    p.add_argument("--data", default="data/digits", help="where to write the digit images (default data/digits)")
    p.add_argument("--project", default="runs", help="parent folder of runs (default runs)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")

    p = sub.add_parser("check", help="find bad files, duplicates, leakage and imbalance in a data set")
    p.add_argument("--data", required=True, help="the data folder, in any layout `imgcls train` accepts, or a label "
                   "file (CSV/TSV/TXT)")
    _label_file_flags(p)
    p.add_argument("--multi-label", action=argparse.BooleanOptionalAction, default=None,
                   help="several labels per image in the label file (default: found from the file)")
    p.add_argument("--out", metavar="DIR", help="where to write check.json, check.html and class_counts.png "
                   "(default: a new folder runs/check, runs/check2, ...)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when there are errors (for CI)")
    p.add_argument("--export-clean", metavar="DIR", help="write a cleaned copy to this new folder")
    p.add_argument("--imgsz", type=int, default=224, metavar="N",
                   help="model input size, to flag images far smaller than it and, with --labels, the size the "
                        "backbone sees (default 224)")
    p.add_argument("--near-threshold", type=int, default=None, metavar="BITS",
                   help="perceptual-hash distance (of 256 bits) that counts as a near duplicate (default 26)")
    p.add_argument("--no-near", action="store_true", help="skip the perceptual-hash near-duplicate search")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="reading threads (default: cores + 1)")
    p.add_argument("--labels", action="store_true",
                   help="also find likely label errors (K-fold cross-validation on cached backbone features, ranked "
                        "by cleanlab), outliers and semantic near-duplicates")
    p.add_argument("--export-relabel", metavar="FILE",
                   help="with --labels: write an editable CSV (path, given, suggested, score, action), most likely "
                        "label error first")
    p.add_argument("--relabel", metavar="FILE",
                   help="apply an edited relabel CSV to the --export-clean copy (the source is never modified)")
    p.add_argument("--model", default=None,
                   help="backbone whose features --labels uses (default tf_efficientnet_lite0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)

    p = sub.add_parser("tune", help="search training settings with Optuna (resumable)",
                       description="Every training flag given here is fixed for all trials; the others are searched.")
    p.add_argument("--trials", type=int, default=20, help="number of trials in the study (default 20)")
    p.add_argument("--timeout", help="stop starting new trials after this long, e.g. 30m or 2h")
    p.add_argument("--space", metavar="YAML", help="search space file (default: lr, weight decay, optimizer, "
                   "batch size, label smoothing, augmentation, unfreeze epoch)")
    p.add_argument("--storage", help="Optuna storage URL shared by several machines, e.g. postgresql://u:p@host/db "
                   "(default: SQLite inside the tune folder)")
    p.add_argument("--study-name", help="study name inside --storage (default imgcls)")
    _add_train_arguments(p, run_flags=False)


def _label_file_flags(p) -> None:
    """--images and --columns: where a label file given as --data has its images, and which columns it reads."""
    p.add_argument("--images", metavar="DIR", help="the folder a label file's image paths are relative to (default: "
                   "its folder)")
    p.add_argument("--columns", metavar="PATH,LABEL", help="a label file's image-path and label columns (default: "
                   "recognised by their header)")


def _evaluation_commands(sub) -> None:
    p = sub.add_parser("val", help="evaluate weights: metrics, plots, error gallery with Grad-CAM, calibration")
    p.add_argument("--weights", required=True, help="an imgcls checkpoint, e.g. runs/train/weights/best.pt")
    p.add_argument("--data", help="a folder with the model's class names, or a label file (CSV/TSV/TXT) of them "
                   "(default: the run's own split)")
    _label_file_flags(p)
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="which split (default val)")
    p.add_argument("--tta", action="store_true", help="average the predictions of each image and its mirror image")
    p.add_argument("--multi-label", action=argparse.BooleanOptionalAction, default=None,
                   help="expect a model that gives several labels per image (default: as its checkpoint says)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a temperature and the --reject threshold on the val split and store them in the checkpoint")
    p.add_argument("--ood", metavar="DIR",
                   help="a folder of images of none of the classes: report the AUROC of the open-set score and the "
                        "false-accept rate of --reject")
    p.add_argument("--errors", type=int, default=16, metavar="N", help="mistakes shown in errors.png (default 16)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default 32)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="data loading processes")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--runtime", default="auto", help=RUNTIME_HELP)

    p = sub.add_parser("report", help="(re)write RUN/report.html, one self-contained page per run")
    p.add_argument("run", help="a run folder, e.g. runs/train")

    p = sub.add_parser("compare", help="one table of several runs (console, CSV and HTML)")
    p.add_argument("runs", nargs="+", help="run folders, e.g. runs/train runs/train2 or runs/*")
    p.add_argument("--sort", default="val_accuracy", help="column to sort by, best first (default val_accuracy)")
    p.add_argument("--out", help="folder for compare.csv and compare.html (default: RUNS_PARENT/compare, compare2, ...)")


def _deployment_commands(sub) -> None:
    p = sub.add_parser("predict", help="label images from a file, folder, glob or list file")
    p.add_argument("--weights", required=True, help="RUN/weights/best.pt from imgcls train, or an exported file "
                                                    "(.onnx, .xml, .torchscript, .tflite; .mlpackage on macOS)")
    p.add_argument("--source", required=True,
                   help="an image, a folder (searched recursively), a quoted glob such as 'photos/*.jpg', "
                        "or a .txt file listing one path per line")
    p.add_argument("--topk", type=int, default=5, metavar="K",
                   help="classes to list per image (default 5; a multi-label model gives every label's probability)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default 32)")
    p.add_argument("--save-img", action="store_true", help="also save a copy of each image with its label drawn on")
    p.add_argument("--out", default="runs/predict", metavar="DIR",
                   help="output folder; repeats become DIR2, DIR3, ... (default runs/predict)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--runtime", default="auto", help=RUNTIME_HELP)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoding threads (default: cores - 1); with --ray, Ray workers, one model each (default: one "
                        "per CPU of the Ray cluster)")
    _add_ray(p, "run the model on Ray Data workers")
    _add_reject(p)

    p = sub.add_parser("serve", help="a local web page and REST API for a trained model")
    p.add_argument("--weights", required=True, help="RUN/weights/best.pt from imgcls train, or an exported file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", metavar="KEY",
                   help="require this key (16 or more characters) on every request but /health and the page, sent as "
                        "'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: $IMGCLS_API_KEY, which other "
                        "users cannot read from the process list; neither: no key)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the port, each with its own copy of the model (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=20, metavar="MB",
                   help="largest request body accepted, in MB (default 20)")
    p.add_argument("--max-files", type=int, default=16, metavar="N", help="most images per request (default 16)")
    p.add_argument("--max-pixels", type=int, default=89_478_485, metavar="N",
                   help="largest image accepted, in pixels (width x height); larger uploads get 413 before they are "
                        "decoded (default 89478485, PIL's limit)")
    p.add_argument("--topk", type=int, default=5, metavar="K",
                   help="classes returned per image (default 5; a multi-label model gives every label's probability)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--runtime", default="auto", help=RUNTIME_HELP)
    _add_ray(p, "deploy the app on Ray Serve")
    p.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="with --ray: replicas, each with its own model (default 1); the autoscaling minimum")
    p.add_argument("--max-replicas", type=int, default=None, metavar="N",
                   help="with --ray: the autoscaling maximum (default: --replicas)")
    _add_reject(p)

    p = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript, OpenVINO, TFLite, Core ML or a web "
                                      "page that classifies in the browser, parity-checked")
    p.add_argument("--weights", required=True, help="checkpoint to export, e.g. runs/train/weights/best.pt")
    p.add_argument("--format", default="onnx",
                   help="onnx (default), torchscript, openvino, tflite, coreml or web (a folder: a page that runs the "
                        "model in the browser)")
    p.add_argument("--int8", action="store_true",
                   help="onnx, tflite and web: also write an INT8 file (calibrated on training images) and compare "
                        "its size, speed, accuracy and agreement with PyTorch with FP32")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="onnx, torchscript, openvino: accept any batch size (default: batch 1)")
    p.add_argument("--out", metavar="FILE", help="output file, or folder for coreml and web (default: next to the "
                                                 "checkpoint, e.g. best.onnx, best_web)")
    p.add_argument("--calib-images", type=int, default=64, metavar="N",
                   help="training images used to calibrate INT8 (default 64)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")

    p = sub.add_parser("benchmark", help="img/s and p50/p95 latency of a checkpoint on each runtime")
    p.add_argument("--weights", required=True, help="checkpoint, e.g. runs/train/weights/best.pt")
    p.add_argument("--backends", default="torch,onnx,onnx-int8,openvino",
                   help="comma list from torch, onnx, onnx-int8, openvino, torchscript, tflite, tflite-int8 "
                        "(default: the first four)")
    p.add_argument("--batch", default="1,32", help="batch sizes, comma separated (default 1,32)")
    p.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement (default 3)")
    p.add_argument("--threads", type=int, help="cores for every runtime (default: each runtime's own); "
                                               "ONNX Runtime runs one single-threaded slice of a batch per core")
    p.add_argument("--out", metavar="DIR", help="folder for benchmark.csv/.json (default: RUN/benchmark, "
                                                "RUN/benchmark2, ...)")


def _add_ray(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help=f"{what}: on a Ray started here on this machine's cores, or on the Ray cluster at "
                             "ADDRESS (HOST:6379, or auto); needs pip install 'imgcls[ray]'")


def _add_reject(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reject", nargs="?", const=True, default=False, type=float, metavar="KEEP",
                        help="label images unlike the training data 'unknown', at the threshold calibrated on the "
                             "validation split (keeping 95%% of it); --reject 0.9 keeps 90%% instead")


def _run(args: argparse.Namespace) -> int:
    import imgcls

    command = args.command
    if command in ("train", "distill"):
        from .engine import distributed

        try:
            getattr(imgcls, command)(cfg_file=args.cfg, resume=args.resume, **_train_settings(args))
        finally:
            distributed.cleanup()
        if distributed.enabled():
            distributed.leave()
    elif command == "demo":
        imgcls.demo(args.data, args.project, **({"epochs": args.epochs} if args.epochs is not None else {}))
    elif command == "check":
        from .data.check import NEAR_THRESHOLD
        from .reporting.check_page import format_console

        report = imgcls.check(args.data, out=args.out, imgsz=args.imgsz, near=not args.no_near,
                              threshold=NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold,
                              workers=args.workers, export_clean=args.export_clean, labels=args.labels,
                              export_relabel=args.export_relabel, relabel=args.relabel, model=args.model,
                              device=args.device, progress=sys.stderr.isatty(), images=args.images,
                              columns=args.columns, multi_label=args.multi_label)
        print(format_console(report))
        return 1 if args.strict and report.errors else 0
    elif command == "tune":
        settings = _train_settings(args)
        fixed = {k: v for k, v in settings.items() if k not in ("data", "model", "project", "name", "seed")}
        imgcls.tune(args.data, settings.get("model", "tf_efficientnet_lite0"), trials=args.trials, timeout=args.timeout,
                    space=args.space, storage=args.storage, study_name=args.study_name,
                    project=settings.get("project", "runs"), name=settings.get("name", "tune"),
                    seed=settings.get("seed", 0), **fixed)
    elif command == "val":
        imgcls.evaluate(args.weights, args.data, args.split, tta=args.tta, calibrate=args.calibrate, errors=args.errors,
                        batch_size=args.batch_size, workers=args.workers, device=args.device, runtime=args.runtime,
                        ood=args.ood, multi_label=args.multi_label, images=args.images, columns=args.columns)
    elif command == "report":
        print(imgcls.report(args.run))
    elif command == "compare":
        imgcls.compare(args.runs, sort=args.sort, out_dir=args.out)
    elif command == "predict":
        imgcls.predict(args.weights, args.source, topk=args.topk, batch_size=args.batch_size, save_img=args.save_img,
                       out=args.out, device=args.device, runtime=args.runtime, workers=args.workers,
                       reject=args.reject, ray=args.ray)
    elif command == "serve":
        imgcls.serve(args.weights, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                     max_files=args.max_files, topk=args.topk, device=args.device, runtime=args.runtime,
                     max_pixels=args.max_pixels, reject=args.reject, api_key=args.api_key, workers=args.workers,
                     ray=args.ray, replicas=args.replicas, max_replicas=args.max_replicas)
    elif command == "export":
        imgcls.export(args.weights, args.format, int8=args.int8, dynamic_batch=args.dynamic_batch, out=args.out,
                      calibration_images=args.calib_images, force=args.force)
    elif command == "benchmark":
        imgcls.benchmark(args.weights, args.backends, args.batch, seconds=args.seconds, threads=args.threads,
                         out=args.out)
    elif command == "models":
        names = imgcls.list_model_names(args.pattern, pretrained_only=args.pretrained)
        print("\n".join(names))
        print(f"# {len(names)} model(s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .console import setup_logging

    setup_logging()
    try:
        return _run(args)
    except ImgclsError as e:
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        where = f" (rank {os.environ.get('RANK', '0')} of {world})" if world > 1 else ""
        print(f"imgcls: error{where}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; continue the run with `imgcls train --resume RUN_DIR`" if args.command == "train" else ""
        print(f"imgcls: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
