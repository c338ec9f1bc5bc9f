#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one device call of under 10 minutes on one H100 or H200: full-grid inference
# of the shipped density model (bench/predict.py), the grouped-split density model at GPU scale
# (bench/train_grouped.py) and DosNet at its own width beside the CPU configuration (bench/dos_ablation.py).
# Each training run is sized to a wall-clock budget by a 20-step calibration run, so the call ends in time.
#
# The device image has torch + CUDA, e3nn, pyarrow, numpy, scipy and typer but not zarr, pymatgen or vesin, and
# Python 3.12. Prepare here (CPU machine; .whl and .gpu listed in .git/info/exclude), then carry both:
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
#       --no-deps -d .whl zarr==3.1.6 numcodecs==0.17.1 donfig google-crc32c vesin pymatgen pymatgen-core monty \
#       spglib ruamel.yaml ruamel.yaml.clib orjson palettable uncertainties bibtexparser
#   cp -r data/gpaw-atoms .gpu/gpaw && rm -r .gpu/gpaw/dos_raw.parquet .gpu/gpaw/arrays/dos_abs   (the split
#   store with Δρ against free atoms and DOS windows, as the shipped models; `chgdata run --from-dir
#   ../shared/data/gpaw --store .gpu/gpaw --reference gpaw-free-atoms` builds one; 42 MB: the call carries 64 MiB)
# and on the device:  bash bench/gpu_session.sh .gpu/gpaw      (carry: .whl, .gpu; timeout_s 600)
# This checkout is imported from a copy laid out as the installed package (no build step on the device).
set -uo pipefail
STORE=${1:-.gpu/gpaw}
REPORTS=${OUT:-bench/results/gpu-run}
mkdir -p "$REPORTS"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
rm -rf /tmp/src && mkdir -p /tmp/src && cp -r chgdata /tmp/src/ && for p in models pipelines cli app; do
    cp -r "$p" "/tmp/src/chgdata/$p"; done
export PYTHONPATH=/tmp/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$REPORTS/device.txt"
# shipped density model: 2/8/20/50-atom cells on 0.1 Å grids, the ensemble in one pass and member by member, and
# one grid of 10⁷ points with its peak memory; a failure here must not cost the training runs
[ -n "${SKIP_PREDICT:-}" ] || timeout 150 python3 bench/predict.py --device cuda --checkpoint models/default/density.pt \
    --big 1e7 --paths one-pass,one-pass-bf16,members --out "$REPORTS/predict_gpu.md" \
    || echo "bench/predict.py failed or timed out" >&2
# the accuracy side of bf16 head products on the GPU (grouped test split; the CPU figure is in BENCHMARKS.md)
timeout 60 python3 bench/precision.py --store "$STORE" --device cuda --out "$REPORTS/precision_gpu.md" \
    || echo "bench/precision.py failed or timed out" >&2
# the grouped-split density figure at GPU scale: the store's train split, test and val reported beside the SAED
# reference (per split and per held-out composition); element descriptors and weight decay as in the CPU recipe
timeout 270 python3 bench/train_grouped.py --store "$STORE" --out /tmp/grouped --size large --device cuda \
    --probes 8000 --batch 32 --max-probes 262144 --lr 3e-3 --steps 6000 --budget-s 170 \
    --enc '{"element_features": true}' \
    --weight-decay 0.05 || echo "bench/train_grouped.py failed or timed out" >&2
cp /tmp/grouped/report.md "$REPORTS/train_grouped_gpu.md" 2>/dev/null
cp /tmp/grouped/metrics.csv "$REPORTS/train_grouped_gpu_metrics.csv" 2>/dev/null
# DosNet at its own width (l_max 3, 259 channels) and the CPU configuration on the grouped split, val figures
timeout 170 python3 bench/dos_ablation.py --store "$STORE" --device cuda --only dosnet-wide,dosnet \
    --steps 20000 --budget-s 50 --out /tmp/dos-gpu --results "$REPORTS/dos_gpu.md" \
    || echo "DOS GPU runs failed or timed out" >&2
