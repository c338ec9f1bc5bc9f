#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one device call (about 9 minutes on one H100 or H200):
# full-grid inference of the shipped model (bench/predict.py) and the delta/total/DOS training runs
# (bench/train_gpu.py), reports written to $OUT.
#
# The device image has torch + CUDA, e3nn, pyarrow and typer but not zarr, pymatgen or vesin, and Python 3.12.
# Prepare here (CPU machine), then carry `.whl` and the store:
#   pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl zarr numcodecs donfig \
#       google-crc32c vesin pymatgen pymatgen-core monty spglib ruamel.yaml ruamel.yaml.clib orjson \
#       palettable uncertainties bibtexparser
#   pip wheel --no-deps -w .whl .                      # this checkout as a wheel (rebuild after every change)
#   chgdata run --from-dir ../shared/data/gpaw --store .gpu/gpaw --reference gpaw-free-atoms   (split by
#   formula; Δρ against free atoms as the shipped model; gpaw-more can be added with a second `chgdata ingest
#   --from-dir ../shared/data/gpaw-more` before build-delta, ~50 MB in all; or cp -r data/gpaw-atoms .gpu/gpaw)
# DOS (optional second argument): the split store with DOS windows, e.g. cp -r data/gpaw-all .gpu/gpaw-all
# and on the device:  bash bench/gpu_session.sh .gpu/gpaw .gpu/gpaw-all     (carry: .whl, .gpu; timeout_s 600)
set -euo pipefail
STORE=${1:-.gpu/gpaw}
DOS_STORE=${2:-.gpu/gpaw-all}
REPORTS=${OUT:-bench/results/gpu-run}
mkdir -p "$REPORTS"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$REPORTS/device.txt"
# 20-atom cell (and the others) on 0.1 Å grids; a failure here must not cost the training runs
timeout 150 python3 bench/predict.py --device cuda --checkpoint models/default/density.pt \
    --out "$REPORTS/predict_gpu.md" || echo "bench/predict.py failed or timed out" >&2
python3 bench/train_gpu.py --store "$STORE" --out /tmp/train-work --report "$REPORTS/train_gpu.md"
cp /tmp/train-work/train_gpu.json "$REPORTS/"
# the grouped-split figure of issue 16 at GPU scale: train on the store's train split, report test and val
# beside the SAED reference (per split and per held-out composition); element descriptors and weight decay as
# in the CPU recipe of the shipped model
timeout 240 python3 bench/train_grouped.py --store "$STORE" --out /tmp/grouped --size large --device cuda \
    --probes 8000 --batch 32 --lr 3e-3 --steps 3000 --enc '{"element_features": true}' --weight-decay 0.05 && cp /tmp/grouped/report.md "$REPORTS/train_grouped_gpu.md" \
    || echo "bench/train_grouped.py failed or timed out" >&2
# DosNet at its own width (l_max 3, 259 channels) and the CPU configuration, 3000 steps each, on the grouped split
if [ -d "$DOS_STORE" ]; then
    timeout 240 python3 bench/dos_ablation.py --store "$DOS_STORE" --device cuda --only dosnet-wide,dosnet \
        --steps 3000 --out /tmp/dos-gpu --results "$REPORTS/dos_gpu.md" || echo "DOS GPU runs failed or timed out" >&2
fi
