"""Training settings as one typed object: defaults, then a --cfg YAML file, then CLI flags."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ImgclsError

OPTIMIZERS = ("SGD", "Adam", "AdamW")
DEVICES = ("auto", "cpu", "cuda", "mps")

RESIZE_MODES = ("crop", "squash", "pad")
LOGGERS = ("tensorboard", "mlflow")   # experiment trackers (engine/trackers.py)


def parse_imgsz(imgsz) -> tuple[int, int] | None:
    """--imgsz: one number (square) or "H,W" (also an int or a (H, W) pair from Python); None means the
    model's own size. Raises ValueError for anything else."""
    if imgsz is None or imgsz == "":
        return None
    if isinstance(imgsz, str):
        parts = [p.strip() for p in imgsz.replace("x", ",").split(",")]
        values = [int(p) for p in parts]
    elif isinstance(imgsz, (list, tuple)):
        values = [int(v) for v in imgsz]
    else:
        values = [int(imgsz)]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(imgsz)
    return values[0], values[1]


def parse_duration(text, flag: str = "--budget") -> float | None:
    """'90s', '30m', '2h', '1.5h' or plain seconds -> seconds (None stays None)."""
    if text in (None, ""):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise ImgclsError(f"{flag} {text!r}: use a duration such as 90s, 30m or 2h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def parse_loggers(spec: str | None) -> list[str]:
    """--logger: "tensorboard", "mlflow" or both ("tensorboard,mlflow", or the flag repeated); [] when off."""
    text = ",".join(spec) if isinstance(spec, (list, tuple)) else str(spec or "")
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    return list(dict.fromkeys(names))


def setting(default, help: str, repeatable: bool = False):
    """A TrainConfig field whose help text (for --help and the docs) travels with it. A ``repeatable`` text
    setting may be given several times on the command line; the values are joined with commas."""
    return field(default=default, metadata={"help": help, "repeatable": repeatable})


DEFAULT_SPLIT = "0.7,0.15,0.15"  # train, val, test fractions of a single tree of class folders


@dataclass
class TrainConfig:
    # data
    data: str = setting("",
        "folder with train/ and val/ (optionally test/) class folders, one tree of class folders, or a label file "
        "(CSV, TSV or TXT: image path and label per row)")
    images: str | None = setting(None, "the folder a label file's image paths are relative to (default: its folder)")
    columns: str | None = setting(None, "a label file's image-path and label columns, PATH,LABEL (default: "
                                  "recognised by their header)")
    multi_label: bool | None = setting(None, "several labels per image, read from a label file (labels separated by "
                                       "; | or spaces in one column, or one 0/1 column per label); default: found "
                                       "from the file")
    split: str = setting(DEFAULT_SPLIT,
        "train,val[,test] fractions for a single tree, or a split.csv to reuse")
    imgsz: str | None = setting(None, "input size in pixels: one number, or H,W (default: the model's pretrained size)")
    resize: str = setting("crop", "how images meet the input size: crop (short side, centre crop), squash (the whole "
                          "image stretched) or pad (the whole image, letterboxed)")
    augment: str = setting("light", "training augmentation: none, light or strong")
    balance: bool = setting(False, "weight the loss by inverse class frequency, for imbalanced data")
    relabel: str | None = setting(None, "apply an edited relabel CSV (from `imgcls check --labels --export-relabel`): "
                                  "its relabel and drop rows change the labels this run trains and evaluates on; "
                                  "the source folders are never touched")
    # model
    model: str = setting("auto",
        "any timm model name, or simple_cnn; see `imgcls models`. auto: tf_efficientnet_lite0 on a CPU; on a GPU the "
        "largest backbone whose weights are on this machine that the budget trains well")
    pretrained: bool = setting(True, "start from pretrained weights")
    weights: str | None = setting(None, "starting weights file: a state_dict, .safetensors or checkpoint")
    freeze: bool | None = setting(None, "train only the classifier head (default: on when pretrained)")
    unfreeze_at: int | None = setting(None, "epoch from which the whole network trains")
    backbone_lr_mult: float = setting(0.1, "backbone lr = lr x this once unfrozen")
    se: bool = setting(False, "add squeeze-and-excitation blocks to simple_cnn")
    # optimisation
    budget: str = setting("15m", "time for training, e.g. 5m or 1h: imgcls measures this machine and plans its phases "
                          "to fit (flags such as --epochs, --freeze or --unfreeze-at set the plan yourself)")
    fast: bool = setting(False, "the quickest plan: only a linear head on cached features of the frozen backbone "
                         "(30 epochs, about 2 minutes for 2,500 images on a 2-core CPU)")
    epochs: int | None = setting(None, "number of epochs (default: planned from --budget; 30 with --fast)")
    batch_size: int = setting(32, "images per batch")
    optim: str = setting("AdamW", "SGD, Adam or AdamW")
    lr: float | None = setting(None, "initial lr (default: 1e-2 with a frozen backbone, else 1e-3; x10 for SGD)")
    lrf: float = setting(0.01, "final lr as a fraction of lr, reached by cosine decay")
    warmup_epochs: float = setting(1.0, "linear warmup length in epochs")
    weight_decay: float = setting(0.01, "weight decay")
    label_smoothing: float = setting(0.1, "label smoothing")
    asl: bool = setting(False, "multi-label data: the asymmetric loss (ASL, Ridnik et al. 2021) instead of binary "
                        "cross-entropy; it down-weights the many easy negatives of data where each image has few of "
                        "many labels")
    patience: int = setting(10, "stop after this many epochs without val improvement; 0 disables")
    clip_grad: float | None = setting(None, "clip the gradient norm to this value")
    seed: int = setting(0, "random seed for the split, shuffling and initialisation")
    # knowledge distillation (imgcls distill)
    teacher: str | None = setting(None, "distill from this trained checkpoint (same classes); see `imgcls distill`")
    kd_temperature: float = setting(4.0, "softening temperature of the distillation loss")
    kd_alpha: float = setting(0.5, "weight of the teacher's soft targets; 1 - alpha goes to the labels")
    # hardware
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps")
    workers: int | None = setting(None, "data loading processes (default: cores - 1)")
    amp: bool | None = setting(None, "autocast on CUDA (bf16 where the GPU has it, else float16); default: a budget "
                               "plan on a GPU times the step with and without it and keeps it where it is clearly "
                               "faster, other runs on CUDA train with it")
    compile: bool | None = setting(None, "torch.compile the network when training all layers (slow start, faster "
                                   "steps); default: a budget plan on a GPU times it where the planned steps could "
                                   "repay the compile and keeps it where they do, otherwise off")
    runtime: str = setting("auto",
        "frozen-backbone and inference passes on CPU: auto (measure which is faster), torch or onnxruntime")
    # caches (outside the run folder: $IMGCLS_CACHE or ~/.cache/imgcls)
    cache: bool = setting(True,
        "with a frozen backbone, train the head on cached features")
    cache_views: int = setting(4, "augmented views cached per training image, cycled over the epochs")
    # output
    project: str = setting("runs", "parent folder of runs")
    name: str = setting("train", "run folder name; repeats become name2, name3, ...")
    exist_ok: bool = setting(False, "write into an existing --project/--name folder")
    logger: str | None = setting(None, "also send the run to an experiment tracker: tensorboard (event files in the "
                                 "run folder) or mlflow (./mlruns unless MLFLOW_TRACKING_URI is set); repeat "
                                 "for both", repeatable=True)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def bad(key, message):
            raise ImgclsError(f"--{key.replace('_', '-')} {getattr(self, key)!r}: {message}")

        if self.optim not in OPTIMIZERS:
            matches = [o for o in OPTIMIZERS if o.lower() == str(self.optim).lower()]
            if matches:
                self.optim = matches[0]
            else:
                bad("optim", f"choose one of {', '.join(OPTIMIZERS)}")
        if self.augment not in ("none", "light", "strong"):
            bad("augment", "choose none, light or strong")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            bad("device", "choose auto, cpu, cuda, cuda:N or mps")
        if self.epochs is not None and self.epochs < 1:
            bad("epochs", "must be at least 1")
        budget = parse_duration(self.budget)  # a malformed duration is a clear error here
        if budget is not None and budget < 10:
            bad("budget", "must be at least 10s")
        if self.batch_size < 1:
            bad("batch_size", "must be at least 1")
        if self.lr is not None and self.lr <= 0:
            bad("lr", "must be positive")
        if not 0 < self.lrf <= 1:
            bad("lrf", "must be in (0, 1]")
        try:
            size = parse_imgsz(self.imgsz)
        except (TypeError, ValueError):
            bad("imgsz", "expected one number or H,W, e.g. 224 or 320,512")
        if size is not None and min(size) < 8:
            bad("imgsz", "must be at least 8 pixels")
        if self.resize not in RESIZE_MODES:
            bad("resize", f"choose {', '.join(RESIZE_MODES)}")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "must be in [0, 1)")
        if self.unfreeze_at is not None and self.unfreeze_at < 1:
            bad("unfreeze_at", "is an epoch number, 1 or more")
        if self.workers is not None and self.workers < 0:
            bad("workers", "must be 0 or more")
        if self.kd_temperature <= 0:
            bad("kd_temperature", "must be positive (typical: 1 to 8)")
        if not 0 <= self.kd_alpha <= 1:
            bad("kd_alpha", "must be in [0, 1]: the weight of the teacher's soft targets")
        if self.runtime not in ("auto", "torch", "onnxruntime"):
            bad("runtime", "choose auto, torch or onnxruntime")
        if self.cache_views < 1:
            bad("cache_views", "must be at least 1")
        unknown = [name for name in parse_loggers(self.logger) if name not in LOGGERS]
        if unknown:
            bad("logger", f"choose {' or '.join(LOGGERS)} (repeat --logger for both)")

    @property
    def planned(self) -> bool:
        """True when imgcls plans the phases from --budget: no flag spells out the epochs or the freezing, and
        nothing rules the plan's cached features out (--no-cache, a distillation teacher)."""
        explicit = self.fast or self.epochs is not None or self.freeze is not None or self.unfreeze_at is not None
        return not explicit and self.cache and not self.teacher

    @property
    def frozen_backbone(self) -> bool:
        return self.pretrained if self.freeze is None else self.freeze

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        # A lone linear head on fixed features tolerates (and needs) a much higher lr than a full network.
        base = 1e-2 if self.optim == "SGD" else 1e-3
        return base * 10 if self.frozen_backbone else base

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value):
    """Turn a YAML or CLI value into the field's type, with an error that names the key."""
    hint = typing.get_type_hints(TrainConfig)[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if args else hint
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise ImgclsError(f"config key {key!r}: needs a value")
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if target is float:
            return float(value)
        if target is str:
            return str(value) if not isinstance(value, (list, tuple)) else ",".join(str(v) for v in value)
    except (TypeError, ValueError):
        raise ImgclsError(f"config key {key!r}: {value!r} is not a valid {target.__name__}") from None
    return value


def load_yaml_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ImgclsError(f"--cfg {path}: file not found")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ImgclsError(f"--cfg {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise ImgclsError(f"--cfg {path}: expected key: value pairs at the top level")
    return content


def make_config(cfg_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Defaults, then the YAML file, then keyword overrides (None means 'not given')."""
    values: dict = {}
    sources = []
    if cfg_file:
        sources.append((f"--cfg {cfg_file}", load_yaml_config(cfg_file)))
    sources.append(("arguments", {k: v for k, v in overrides.items() if v is not None}))
    for origin, mapping in sources:
        for key, value in mapping.items():
            norm = key.replace("-", "_")
            if norm not in FIELDS:
                import difflib

                close = difflib.get_close_matches(norm, FIELDS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ImgclsError(f"{origin}: unknown setting {key!r}{hint}")
            values[norm] = _coerce(norm, value)
    return TrainConfig(**values)
