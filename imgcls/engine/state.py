"""Training state: everything ``fit`` needs to continue a run, saved into last.pt and restored from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metrics import headline
from ..record.results import epoch_from_seed
from .seeds import rng_state, set_rng_state

STATE_KEYS = ("epoch", "step", "history", "best_epoch", "peak_epoch", "phase_ends", "stale", "train_seconds",
              "elapsed", "finished", "optimizer", "scaler", "rng")


def is_better(val: dict, best: dict | None) -> bool:
    """The best-epoch rule on validation reports: higher accuracy (multi-label: higher mAP, which no threshold
    moves), then lower loss."""
    if best is None:
        return True
    if headline(val) != headline(best):
        return headline(val) > headline(best)
    return val["loss"] < best["loss"]


@dataclass
class TrainState:
    epoch: int = 0                  # epochs finished
    step: int = 0                   # optimizer steps taken in the current phase (its lr schedule position)
    history: list[dict] = field(default_factory=list)   # the epochs (record/results.py: one schema)
    best_epoch: int = 0             # the epoch whose weights are best.pt
    peak_epoch: int = 0             # the epoch with the best val accuracy so far: what patience counts from
    phase_ends: bool = False        # best.pt chosen among the epochs that end a phase only (the budget plan's rule)
    stale: int = 0                  # epochs since the peak
    train_seconds: float = 0.0      # training time of the epochs so far, across resumes
    elapsed: float = 0.0            # wall time since the run began (data check and caches included), across resumes
    finished: bool = False
    optimizer: dict | None = None   # state_dict of the current phase's optimizer, for resuming mid-phase
    scaler: dict | None = None
    rng: dict | None = None

    @property
    def best(self) -> dict | None:
        """The best epoch's validation report."""
        return self.history[self.best_epoch - 1]["val"] if self.best_epoch else None

    def add_epoch(self, record: dict, seconds: float) -> None:
        """Record a finished epoch, and whether it is the peak so far (patience counts from the peak)."""
        self.history.append(record)
        self.epoch = len(self.history)
        self.train_seconds += seconds
        peak = self.history[self.peak_epoch - 1]["val"] if self.peak_epoch else None
        if is_better(record["val"], peak):
            self.peak_epoch, self.stale = self.epoch, 0
        else:
            self.stale += 1

    def keep_if_best(self, ends_phase: bool) -> bool:
        """Whether the latest epoch becomes best.pt: it is better than the best so far (``is_better``) and, with
        ``phase_ends``, ends a phase. Each phase of a budget plan ends its own schedule at a low learning rate;
        choosing among every epoch on a small val split picks val's noise (docs/benchmarks.md, 'Alternatives
        measured')."""
        if (ends_phase or not self.phase_ends) and is_better(self.history[-1]["val"], self.best):
            self.best_epoch = self.epoch
            return True
        return False

    def to_checkpoint(self) -> dict:
        """The keys last.pt holds for resuming (plain types and tensors: safe with weights_only=True)."""
        self.rng = rng_state()
        return {key: getattr(self, key) for key in STATE_KEYS}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "TrainState":
        state = cls(**{key: checkpoint[key] for key in STATE_KEYS if key in checkpoint})
        if "peak_epoch" not in checkpoint:  # saved before best.pt and the peak could differ
            state.peak_epoch = state.best_epoch
        # a last.pt from before the one metrics schema holds its epochs in results.json's rendering
        names = list(checkpoint.get("class_names", ()))
        state.history = [epoch_from_seed(e, names) if "valid info" in e else e for e in state.history]
        if state.rng is not None:
            set_rng_state(state.rng)
        return state
