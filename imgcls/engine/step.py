"""The training step's settings on an accelerator: autocast, memory format and torch.compile, chosen by timing the
whole network's step on the device (engine/budget.py does the timing and passes it in), not by flag; a flag
(--amp/--no-amp, --compile/--no-compile) forces its setting. Pure: the timers are arguments, so recorded timings
drive the same choice in tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

# A setting off the plain step (autocast instead of float32, channels_last instead of the default layout) is taken
# only when it saves at least this share of the step: a few timed steps on a shared device differ by a few percent
# from run to run, and float32 in the default layout is the step every op supports at full precision.
CLEARLY_FASTER = 0.07
# torch.compile is timed only when its best case could pay: these steps' time x COMPILE_GAIN > COMPILE_SECONDS.
# Both are assumed, not measured (timing it costs the compile itself): inductor's own benchmarks of timm models
# train at most about 1.5x faster compiled (a third of the step saved), and a cold compile of a small network's
# training step takes no less than about half a minute; a plan this rule leaves out cannot repay the compile.
COMPILE_GAIN = 1 / 3
COMPILE_SECONDS = 30.0
AMP_NAMES = {False: "float32", "bf16": "bf16 autocast", True: "float16 autocast"}
SHORT_AMP_NAMES = {False: "float32", "bf16": "bf16", True: "float16"}


@dataclass(frozen=True)
class Step:
    """One candidate for the training step: its autocast (False, "bf16", or True: float16 with a gradient scaler)
    and memory format."""

    amp: bool | str = False
    channels_last: bool = False

    def describe(self) -> str:
        return f"{AMP_NAMES[self.amp]}, {self._layout}"

    @property
    def label(self) -> str:
        """The short name a record and the log line list its timing under, e.g. "bf16+channels_last"."""
        return f"{SHORT_AMP_NAMES[self.amp]}+{self._layout}"

    @property
    def _layout(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def departures(self) -> int:
        """How many of its settings are off the plain step (each must be CLEARLY_FASTER)."""
        return (self.amp is not False) + self.channels_last


@dataclass(frozen=True)
class StepSettings:
    """What fit applies to an accelerator's training step, with the timings that chose it: results.json's and the
    checkpoints' "training step" record it, and a resumed run trains with it again."""

    amp: bool | str = False
    channels_last: bool = False
    compile: bool = False
    seconds: dict = field(default_factory=dict)  # seconds per training image under each timed Step's label
    compile_note: str = ""                       # why torch.compile is on or left out, with its numbers

    def line(self, device_type: str) -> str:
        """The log line: the chosen step, its speed and the others timed, and the compile decision."""
        chosen = Step(self.amp, self.channels_last)
        others = ", ".join(f"{what} {s * 1000:.2f}" for what, s in self.seconds.items() if what != chosen.label)
        speed = f" ({self.seconds[chosen.label] * 1000:.2f} ms/img" + (f"; {others}" if others else "") + ")" \
            if chosen.label in self.seconds else ""
        return f"Step on {device_type}: {chosen.describe()}{speed}; torch.compile {self.compile_note}"

    def to_dict(self) -> dict:
        return {"amp": self.amp, "channels_last": self.channels_last, "compile": self.compile,
                "seconds per image": dict(self.seconds), "compile note": self.compile_note}

    @classmethod
    def from_dict(cls, record: dict) -> StepSettings:
        return cls(amp=record["amp"], channels_last=record["channels_last"], compile=record["compile"],
                   seconds=dict(record.get("seconds per image") or {}), compile_note=record.get("compile note", ""))


def uses_convolutions(model: nn.Module) -> bool:
    """channels_last only pays off for convolutional networks."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def candidates(device_amp: bool | str, wanted_amp: bool | None, convolutional: bool) -> list[Step]:
    """The steps worth timing, plain first: float32 and the device's autocast (``device_amp``, from
    runtime/device.accelerator_amp: False where it has none) unless --amp/--no-amp (``wanted_amp``) forces one;
    each in the default layout and, for a convolutional network, channels_last."""
    amps = [False] if not device_amp else [device_amp] if wanted_amp else [False, device_amp]
    layouts = [False, True] if convolutional else [False]
    return [Step(amp, layout) for amp in amps for layout in layouts]


def fastest(seconds: dict[Step, float], margin: float = CLEARLY_FASTER) -> Step:
    """The quickest timed step, where each setting off the plain step must be clearly quicker: its time counts
    (1 + margin) times more per such setting."""
    return min(seconds, key=lambda step: seconds[step] * (1 + margin) ** step.departures)


def choose_step(timer, steps: list[Step], known: dict[Step, object] | None = None):
    """(the chosen Step, its timing, {Step: seconds per training image}): ``timer(step)`` times each of ``steps``
    not in ``known`` (timings made already: the plan's own measurement), returning costs with ``top_train``
    (engine/budget.Costs). A candidate whose step fails (an op without a kernel in that precision) is left out."""
    timed = dict(known or {})
    for step in steps:
        if step not in timed:
            try:
                timed[step] = timer(step)
            except Exception:  # noqa: BLE001, S112 - one candidate less; the plan's own timing always stands
                continue
    seconds = {step: timing.top_train for step, timing in timed.items() if step in steps}
    best = fastest(seconds)
    return best, timed[best], seconds


def compile_worth_timing(seconds_per_image: float, images: int) -> bool:
    """Whether torch.compile could pay on ``images`` training images at ``seconds_per_image`` eager: only when its
    best case (COMPILE_GAIN of each step) saves more than the least a compile takes (COMPILE_SECONDS)."""
    return seconds_per_image * images * COMPILE_GAIN > COMPILE_SECONDS


def compile_pays(eager: float, compiled: float, compile_seconds: float, images: int) -> bool:
    """Whether the steps saved on ``images`` training images (seconds per image ``eager`` and ``compiled``) repay
    the compile's ``compile_seconds``."""
    return (eager - compiled) * images > compile_seconds


def decide_compile(wanted: bool | None, eager: float, images: int, batch: int, compile_timer):
    """(compile or not, why, (compile seconds, compiled seconds per image) when timed): --compile/--no-compile
    (``wanted``) force it; otherwise timed by ``compile_timer()`` only when it could pay on the plan's ``images``
    training images at ``eager`` seconds each, and kept only when it does."""
    steps = -(-images // max(batch, 1))
    if wanted is not None:
        return wanted, f"{'on' if wanted else 'left out'} (--{'' if wanted else 'no-'}compile)", None
    if not compile_worth_timing(eager, images):
        return False, (f"left out: {steps:,} steps at {eager * batch * 1000:.0f} ms could save at most "
                       f"{eager * images * COMPILE_GAIN:.0f} s, less than a compile takes (about "
                       f"{COMPILE_SECONDS:.0f} s or more)"), None
    try:
        compile_seconds, compiled = compile_timer()
    except Exception as e:  # noqa: BLE001 - no compiler here, or an op it cannot trace: the eager step trains
        return False, f"left out: it failed here ({type(e).__name__}: {str(e)[:80]})", None
    saved = (eager - compiled) * images
    numbers = (f"{compile_seconds:.0f} s to compile, {compiled * batch * 1000:.0f} against {eager * batch * 1000:.0f}"
               f" ms a step, {saved:.0f} s saved over {steps:,} steps")
    if compile_pays(eager, compiled, compile_seconds, images):
        return True, f"on ({numbers})", (compile_seconds, compiled)
    return False, f"left out ({numbers})", (compile_seconds, compiled)
