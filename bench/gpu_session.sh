#!/usr/bin/env bash
# Every pending GPU measurement of bench/RESULTS.md, in stages that each fit one
# device call (10 minutes) and return at most 8 files from $OUT.
#
#   bash bench/gpu_session.sh tests    # CUDA parity tests, compiled Triton kernels, ptxas check
#   bash bench/gpu_session.sh zoo_a    # zoo a full size: exact/fast, cuSOLVER/default, kernels off/on
#   bash bench/gpu_session.sh zoo_b    # zoo b full size from disk (writes 15.4 GB to $TMPDIR once)
#   bash bench/gpu_session.sh bootstrap  # redraws on CUDA = reference; cost per redraw (RESULTS "Bootstrap")
#   bash bench/gpu_session.sh recommend  # issue 21: te-gpu recommend (defaults) against score, same run
#
# The device machines have torch, triton, scipy and scikit-learn but no network:
# te_gpu is installed from this tree without dependencies. Outside the device
# tool, OUT defaults to bench/results/gpu.
set -u
stage=${1:?usage: bash bench/gpu_session.sh tests|zoo_a|zoo_b|bootstrap|recommend}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1
repo=$PWD
test_cwd=$repo   # pytest puts its working folder first on sys.path

if ! python -m pip install --no-deps --no-build-isolation -e . > "$OUT/install_$stage.log" 2>&1; then
    # no usable setuptools there: lay the package out as it installs (kernels/ is
    # te_gpu.kernels) in a scratch folder and import it from there
    echo "pip install failed (see $OUT/install_$stage.log); using a copy on PYTHONPATH"
    shim=$(mktemp -d)
    cp -r te_gpu "$shim/te_gpu" && cp -r kernels "$shim/te_gpu/kernels"
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    test_cwd=$shim
fi
(cd "$test_cwd" && python -c "import te_gpu.kernels, te_gpu.engine.linalg") \
    || { echo "te_gpu does not import"; exit 1; }

case "$stage" in
tests)
    nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
    python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" \
        >> "$OUT/nvidia_smi.txt" 2>&1
    # compiled kernels (no interpreter) against the torch paths, and the engine on CUDA
    # against the float64 reference
    (cd "$test_cwd" && TE_GPU_NO_INTERPRET=1 timeout 420 python -m pytest -q -p no:cacheprovider -rs \
        "$repo/tests/test_engine_zoo.py" "$repo/tests/test_catalogue.py::test_cuda_equals_reference" \
        "$repo/tests/test_engine_linalg.py" \
        "$repo/tests/test_kernels.py" "$repo/tests/test_engine_nleep.py" \
        "$repo/tests/test_reliability.py") > "$OUT/cuda_tests.txt" 2>&1
    echo "pytest rc=$?" >> "$OUT/cuda_tests.txt"
    timeout 120 python -m te_gpu.kernels.compile_check > "$OUT/compile_check.txt" 2>&1
    tail -3 "$OUT/cuda_tests.txt"
    ;;
zoo_a)
    timeout 330 python bench/run.py --zoo a --scale 1 --devices cuda --precision exact,fast \
        --linalg cusolver,default --repeat 3 --out "$OUT/zoo_a_h100.json" > "$OUT/zoo_a_h100.txt" 2>&1
    TE_GPU_KERNELS=all timeout 200 python bench/run.py --zoo a --scale 1 --devices cuda \
        --precision exact,fast --no-floor --repeat 3 --out "$OUT/zoo_a_h100_kernels.json" \
        > "$OUT/zoo_a_h100_kernels.txt" 2>&1
    grep -E "te_gpu|floor|target" "$OUT/zoo_a_h100.txt" "$OUT/zoo_a_h100_kernels.txt" | tail -20
    ;;
zoo_b)
    timeout 560 python bench/run.py --zoo b --scale 1 --devices cuda --precision exact,fast \
        --warmup-models 100 --out "$OUT/zoo_b_h100.json" > "$OUT/zoo_b_h100.txt" 2>&1
    grep -E "te_gpu|floor|target|read" "$OUT/zoo_b_h100.txt" | tail -20
    ;;
bootstrap)
    (cd "$test_cwd" && timeout 240 python -m pytest -q -p no:cacheprovider -rs \
        "$repo/tests/test_bootstrap.py" -k "reference") > "$OUT/bootstrap_tests.txt" 2>&1
    echo "pytest rc=$?" >> "$OUT/bootstrap_tests.txt"
    timeout 300 python bench/bootstrap_cost.py "$OUT/bootstrap_cost_cuda.json" --device cuda \
        --threads 4 --models 11 --n 5000 --dim 1024 --classes 100 --replicates 200 --repeats 2 \
        --metrics logme,sfda,ncti --naive 20 > "$OUT/bootstrap_cost_cuda.txt" 2>&1
    tail -3 "$OUT/bootstrap_tests.txt"; tail -6 "$OUT/bootstrap_cost_cuda.txt"
    ;;
recommend)
    # the zoo of issue 21 in shape (13 models, N = 6,000, C = 10; widths as its fashion-mnist
    # features: 5 x 1,280, 4 x 320-352, 4 x 96-120) with synthetic values (the real features
    # are not in git); RECOMMEND_N / DEVICE shrink it / run it elsewhere for a dry run
    zoo=$(mktemp -d)
    python -c "
import sys; sys.path.insert(0, 'bench')
import zoo_synth as zs
from te_gpu.io import save_zoo
widths = [1280] * 5 + [320, 320, 320, 352] + [96, 112, 112, 120]
zoo, y = zs.make_zoo(widths, int(sys.argv[2]), c=10, seed=0)
save_zoo(sys.argv[1], 'synth', zoo, y)" "$zoo" "${RECOMMEND_N:-6000}" || exit 1
    timeout 420 python bench/recommend_floor.py "$zoo" "$OUT/recommend_floor_cuda.json" \
        --device "${DEVICE:-cuda}" > "$OUT/recommend_floor_cuda.txt" 2>&1
    echo "rc=$?" >> "$OUT/recommend_floor_cuda.txt"
    rm -rf "$zoo"
    cat "$OUT/recommend_floor_cuda.txt"
    ;;
*)
    echo "unknown stage $stage (tests, zoo_a, zoo_b, bootstrap, recommend)"; exit 2 ;;
esac
