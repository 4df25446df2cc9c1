"""``imgcls demo``: train the default model on real handwritten digits, offline, in about a minute."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("imgcls")

# Settings that finish in a few minutes on a 2-core CPU with the default pretrained model. The frozen
# backbone runs once per cached view (4 per training image), so epochs are nearly free and the
# budget goes to a larger input size instead.
DEMO_SETTINGS = {"epochs": 30, "imgsz": 128, "batch_size": 64}


def demo(data: str | Path = "data/digits", project: str = "runs", **overrides):
    """Write the digits as class folders (once) and train on them with the demo settings; what
    ``imgcls demo`` runs. ``overrides`` are any training settings, e.g. epochs=5."""
    from ..config import make_config
    from ..console import setup_logging
    from ..data.digits import write_digits
    from .train import train

    setup_logging()
    settings = DEMO_SETTINGS | {"data": str(data), "project": project} | overrides
    make_config(**settings)  # a bad setting is refused before anything is written
    root = write_digits(data)
    log.info(f"Demo data: {root} (scikit-learn's handwritten digits, 10 classes, train/val/test folders)")
    result = train(**settings)
    log.info(
        "\nNext, try:\n"
        f"  imgcls train --data {root} --model simple_cnn --no-pretrained --imgsz 32 --epochs 15\n"
        "  imgcls train --data path/to/your/class/folders   # planned to fit --budget 15m; add --fast for about 2 min\n"
        f"  imgcls val --weights {result.run_dir}/weights/best.pt --split test\n"
        f"  imgcls predict --weights {result.run_dir}/weights/best.pt --source {root}/test\n"
        f"  imgcls serve --weights {result.run_dir}/weights/best.pt\n"
        f"  open {result.run_dir}/report.html (everything about the run in one page)"
    )
    return result
