"""A training plan: the phases ``fit`` runs one after another.

A phase says what trains (the head alone, or the whole network), what it trains on (cached backbone
features, or images) and at which learning rates. Each phase has its own warmup and cosine schedule,
so a linear probe can hand over to fine-tuning (LP-FT) without a jump.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import TrainConfig

TRAINS = ("head", "top", "all")
EXPLICIT_EPOCHS = 30  # --epochs when a flag (--fast, --freeze, --unfreeze-at) asks for an explicit plan
INPUTS = ("features", "images")


@dataclass(frozen=True)
class Phase:
    name: str           # shown in the log, results.json and the report
    epochs: int
    trains: str         # "head": the classifier alone; "top": the stages from ``cut`` on; "all": the whole network
    inputs: str         # "features": cached outputs of the frozen part (at ``cut``); "images": pixels
    lr: float           # the head's lr
    body_lr: float      # the lr of everything else that trains
    cut: int | None = None  # the stage where the frozen part ends; None: just before the classifier
    augment: str | None = None  # the augmentation of its images ("none", "light", "strong"); None: --augment's
    mix: bool = False       # mixup/CutMix of each batch of images (when its epochs are many enough to learn from it)
    ema: bool = False       # validate and save an exponential moving average of the weights (timm's ModelEmaV3)
    graded: bool = False    # the body's lr rising layer by layer from body_lr at the stem to lr (fit.graded_groups)
    frozen_norm: bool = False  # batch-norm layers keep their pretrained statistics (eval mode) as all layers train

    def describe(self) -> str:
        where = "pooled backbone features" if self.cut is None else f"stage-{self.cut} activations"
        what = {"head": "the head", "top": f"stages {self.cut}+ and the head", "all": "all layers"}[self.trains]
        on = f"on cached {where}" if self.inputs == "features" else "on images"
        extra = [f"{self.augment} augmentation"] if self.augment else []
        extra += ["mixup/CutMix"] if self.mix else []
        extra += ["an EMA of the weights"] if self.ema else []
        extra += ["batch-norm statistics kept"] if self.frozen_norm else []
        body = f"backbone {self.body_lr:.2g} at the stem, rising layer by layer" if self.graded else \
            f"backbone {self.body_lr:.2g}"
        return f"{self.name}: {self.epochs} epoch(s), {what} {on}, lr {self.lr:.2g}" + \
            (f" ({body})" if self.trains != "head" else "") + \
            (f", {' and '.join(extra)}" if extra else "")

    @property
    def mirrors(self) -> bool:
        """Whether the phase trains on cached activation maps (mirrored at random as it goes: features.FeatureDataset),
        so that its network predicts from the maps and their mirror image (models.parts.Mirrored)."""
        return self.inputs == "features" and self.cut is not None

    def to_dict(self) -> dict:
        return asdict(self)


def phases_of(plan: list[Phase]) -> list[tuple[Phase, int]]:
    """Each phase with the number of epochs before it."""
    out, start = [], 0
    for phase in plan:
        out.append((phase, start))
        start += phase.epochs
    return out


def explicit_plan(cfg: TrainConfig) -> list[Phase]:
    """The plan that --epochs, --freeze and --unfreeze-at spell out: the head on a frozen backbone
    (on cached features unless --no-cache or a distillation teacher needs the images), then, from
    --unfreeze-at on, the whole network with the backbone at lr x --backbone-lr-mult."""
    lr, body_lr = cfg.base_lr, cfg.base_lr * cfg.backbone_lr_mult
    epochs = cfg.epochs or EXPLICIT_EPOCHS
    head_epochs = 0
    if cfg.frozen_backbone:
        head_epochs = min(epochs, cfg.unfreeze_at - 1) if cfg.unfreeze_at else epochs
    inputs = "features" if cfg.cache and not cfg.teacher else "images"
    plan = []
    if head_epochs:
        plan.append(Phase("head", head_epochs, "head", inputs, lr, body_lr))
    if epochs > head_epochs:
        plan.append(Phase("full", epochs - head_epochs, "all", "images", lr, body_lr))
    return plan


def plan_from_records(records: list[dict]) -> list[Phase]:
    """The plan a run recorded (results.json "phases", last.pt "plan"): a resumed run continues exactly it."""
    return [Phase(**record) for record in records]
