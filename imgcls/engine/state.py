"""Training state: everything ``fit`` needs to continue a run, saved into last.pt and restored from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .device import rng_state, set_rng_state

STATE_KEYS = ("epoch", "step", "history", "best_epoch", "stale", "train_seconds", "elapsed", "finished",
              "optimizer", "scaler", "rng")


def is_better(valid_info: dict, best: dict | None) -> bool:
    """The best-epoch rule: higher validation accuracy, then lower validation loss."""
    if best is None:
        return True
    if valid_info["accuracy"] != best["accuracy"]:
        return valid_info["accuracy"] > best["accuracy"]
    return valid_info["loss"] < best["loss"]


@dataclass
class TrainState:
    epoch: int = 0                  # epochs finished
    step: int = 0                   # optimizer steps taken in the current phase (its lr schedule position)
    history: list[dict] = field(default_factory=list)   # the "epoch:N" records of results.json
    best_epoch: int = 0
    stale: int = 0                  # epochs since the best one
    train_seconds: float = 0.0      # training time of the epochs so far, across resumes
    elapsed: float = 0.0            # wall time since the run began (data check and caches included), across resumes
    finished: bool = False
    optimizer: dict | None = None   # state_dict of the current phase's optimizer, for resuming mid-phase
    scaler: dict | None = None
    rng: dict | None = None

    @property
    def best(self) -> dict | None:
        """The best epoch's "valid info"."""
        return self.history[self.best_epoch - 1]["valid info"] if self.best_epoch else None

    def add_epoch(self, record: dict, seconds: float) -> bool:
        """Record a finished epoch; True when it is the new best."""
        self.history.append(record)
        self.epoch = len(self.history)
        self.train_seconds += seconds
        improved = is_better(record["valid info"], self.best)
        if improved:
            self.best_epoch, self.stale = self.epoch, 0
        else:
            self.stale += 1
        return improved

    def to_checkpoint(self) -> dict:
        """The keys last.pt holds for resuming (plain types and tensors: safe with weights_only=True)."""
        self.rng = rng_state()
        return {key: getattr(self, key) for key in STATE_KEYS}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "TrainState":
        state = cls(**{key: checkpoint[key] for key in STATE_KEYS if key in checkpoint})
        state.history = list(state.history)
        if state.rng is not None:
            set_rng_state(state.rng)
        return state
