#!/usr/bin/env bash
# The GPU checks of issue 14, in the order they were run on a lent H100, each under its own
# time limit so that one that hangs does not take the others' time. Logs go to $LOGS
# (default /tmp/gpu_checks). Run from the repository root with the package importable:
#   bash bench/gpu_checks.sh info      # the GPU, torch and CUDA versions
#   bash bench/gpu_checks.sh tests     # CUDA tests + the tests that once failed on CUDA
#   bash bench/gpu_checks.sh gputests  # CUDA tests + the monitor's (shorter)
#   bash bench/gpu_checks.sh gpt2      # GPT-2 124M (T1024 B32): ours vs the compiled reference
#   bash bench/gpu_checks.sh llama     # LLaMA 153M (T2048 B16) vs the reference; 0.76B
#                                      # (T2048 B8) in bf16 and fp8, no reference
#   bash bench/gpu_checks.sh attention # MHA/GQA/MLA and the SDPA kernels
#   bash bench/gpu_checks.sh loss      # train.loss chunked vs full against the reference, GPT-2
#                                      # 124M and LLaMA 153M, the kernels of 4 steps profiled
#   bash bench/gpu_checks.sh big       # LLaMA 0.76B: chunked vs full (no reference)
#   bash bench/gpu_checks.sh profile   # GPT-2 124M, ours (the reference's list is in
#                                      # bench/profiles/), the whole list in $LOGS/profile_*.txt
#   bash bench/gpu_checks.sh fp8       # LLaMA 153M compiled, bf16 vs fp8 (no reference)
#   bash bench/gpu_checks.sh lagged    # GPT-2 124M compiled: train.host_sync step vs lagged,
#                                      # then the CUDA tests (lagged among them)
#   bash bench/gpu_checks.sh inductor  # GPT-2 124M compiled, lagged: the reference and ours,
#                                      # then ours with Inductor's coordinate-descent tuning
#   bash bench/gpu_checks.sh suite     # the whole test suite on the GPU machine (8 workers);
#                                      # the modules it lacks show as skips with their reason
# Seen on an H100 (2026-11-26): each compiled 124M-153M loop takes ~50 s with its compile
# (the loss phase ~150 s a shape), fp8 longer. 2026-11-27: the lagged bench took 170 s
# (the reference and two loops), a bf16 + fp8 pair at 12 steps 180 s, and 15 of the 17
# tests of `gputests` ran in 75 s (4 workers). Done: lagged, fp8. Later that day (torch
# 2.11): `inductor` ran the reference in 67.7 ms and ours 68.1 (0.99x), then ours under
# coordinate-descent tuning did not finish compiling in 140 s; `suite 250 10` got through
# 98% in 250 s: every CUDA test passed, eight others failed (tests that assumed a CPU run,
# torch 2.11's pipelining and first-run memory, sentencepiece 0.2.2), all since fixed.
# Next: profile, inductor with a limit of 300 s, fp8 at 0.76B, the suite (-n 12, 300 s).
set -u
LOGS=${LOGS:-/tmp/gpu_checks}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
run() {  # seconds, name, command...
  # The output goes to a file, not through a pipe: on 2026-11-27 pytest's xdist workers
  # outlived a timed-out run and held a pipe open, which hung the whole call.
  # Each check runs in a process group of its own; whatever of it is left after its
  # limit (xdist workers) is killed with the group, and nothing else.
  local limit=$1 name=$2 rc pid; shift 2
  echo "=== $name ($(date +%T), limit ${limit}s)"
  setsid timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1 &
  pid=$!
  wait "$pid"; rc=$?
  kill -KILL -- "-$pid" 2>/dev/null
  grep -v "^USDT" "$LOGS/$name.log"
  echo "=== $name exit $rc ($(date +%T))"
}
case "${1:-}" in
  info)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $py -c "import torch; print(torch.__version__, torch.cuda.get_device_name(), torch.version.cuda)" ;;
  tests)   # the CUDA tests and those that once failed only on a CUDA machine
    run "${2:-170}" tests $py -m pytest -q -rfEs -p no:cacheprovider -n 6 \
      tests/gpu tests/unit/test_monitor.py tests/unit/test_model.py tests/distributed/test_ddp.py \
      "tests/e2e/test_pipeline.py::test_loss_is_finite_and_falls" ;;
  gputests)
    run "${2:-150}" gputests $py -m pytest -q -rfEs -p no:cacheprovider -n 4 \
      tests/gpu tests/unit/test_monitor.py ;;
  gpt2)
    run "${2:-200}" bench_gpt2 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 25 --skip 5 --shapes gpt2-124m --loops gpt2+compile ;;
  llama)
    run "${2:-100}" bench_llama153 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 25 --skip 5 --shapes llama-153m --loops llama+compile
    run "${3:-150}" bench_llama760 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 20 --skip 5 --shapes llama-760m --loops llama+compile,llama+compile+fp8 \
      --no-ref ;;
  loss)
    run "${2:-200}" loss_gpt2 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 20 --skip 5 --profile 4 --shapes gpt2-124m \
      --loops gpt2+compile+chunked,gpt2+compile+full
    run "${3:-170}" loss_llama153 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 20 --skip 5 --profile 4 --shapes llama-153m \
      --loops llama+compile+chunked,llama+compile+full ;;
  big)
    run "${2:-200}" loss_llama760 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 16 --skip 4 --shapes llama-760m \
      --loops llama+compile+chunked,llama+compile+full --no-ref ;;
  profile)   # ours only: the reference's list is in bench/profiles/
    run "${2:-120}" profile_gpt2 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 12 --skip 4 --profile 4 --profile-dir "$LOGS" --shapes gpt2-124m \
      --loops gpt2+compile --no-ref ;;
  fp8)
    run "${2:-220}" fp8_llama153 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 12 --skip 4 --shapes llama-153m --loops llama+compile,llama+compile+fp8 \
      --no-ref ;;
  lagged)
    run "${2:-200}" lagged_gpt2 $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 20 --skip 5 --shapes gpt2-124m --loops gpt2+compile+step,gpt2+compile+lagged
    run "${3:-150}" gputests_lagged $py -m pytest -q -rfEs -p no:cacheprovider -n 4 tests/gpu ;;
  inductor)  # GPT-2 124M compiled, lagged: the reference and ours, then ours under Inductor's
             # coordinate-descent tuning of its Triton kernels' block sizes (no reference)
    run "${2:-150}" inductor_base $py bench/train_vs_reference.py --device cuda --compile \
      --rounds 1 --steps 20 --skip 5 --shapes gpt2-124m --loops gpt2+compile+lagged
    run "${3:-150}" inductor_cdt env TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 \
      $py bench/train_vs_reference.py --device cuda --compile --rounds 1 --steps 20 --skip 5 \
      --shapes gpt2-124m --loops gpt2+compile+lagged --no-ref ;;
  suite)   # -v: the tests that finished are in the log even when the limit cuts the run
    run "${2:-400}" suite env OMP_NUM_THREADS=1 $py -m pytest -v -rfEs -p no:cacheprovider \
      -n "${3:-8}" tests ;;
  attention)
    run "${2:-90}" attention $py bench/attention_variants.py --device cuda --repeats 5 ;;
  *) echo "usage: $0 info|tests|gputests|gpt2|llama|attention|loss|big|profile|fp8|lagged|inductor|suite [limits...]"; exit 2 ;;
esac
