"""A training plan: the phases ``fit`` runs one after another.

A phase says what trains (the head alone, or the whole network), what it trains on (cached backbone
features, or images) and at which learning rates. Each phase has its own warmup and cosine schedule,
so a linear probe can hand over to fine-tuning (LP-FT) without a jump.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import TrainConfig

TRAINS = ("head", "all")
INPUTS = ("features", "images")


@dataclass(frozen=True)
class Phase:
    name: str           # shown in the log, results.json and the report
    epochs: int
    trains: str         # "head": the classifier alone on a frozen backbone; "all": the whole network
    inputs: str         # "features": cached outputs of the frozen backbone; "images": pixels
    lr: float           # the head's lr
    body_lr: float      # the lr of everything else that trains

    def describe(self) -> str:
        what = "the head on cached backbone features" if self.inputs == "features" else \
            "the head (backbone frozen)" if self.trains == "head" else "all layers"
        return f"{self.name}: {self.epochs} epoch(s), {what}, lr {self.lr:.2g}" + \
            (f" (backbone {self.body_lr:.2g})" if self.trains != "head" else "")

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
    head_epochs = 0
    if cfg.frozen_backbone:
        head_epochs = min(cfg.epochs, cfg.unfreeze_at - 1) if cfg.unfreeze_at else cfg.epochs
    inputs = "features" if cfg.cache and not cfg.teacher else "images"
    plan = []
    if head_epochs:
        plan.append(Phase("head", head_epochs, "head", inputs, lr, body_lr))
    if cfg.epochs > head_epochs:
        plan.append(Phase("full", cfg.epochs - head_epochs, "all", "images", lr, body_lr))
    return plan
