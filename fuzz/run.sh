#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and fails on the first crash.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET, which also
# keep every input that once found a bug) and a working corpus that grows
# between runs (fuzz/corpus/TARGET, not committed). A crash leaves its input
# in fuzz/artifacts/TARGET; copy it into the seeds once the bug is fixed.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# FUZZ_SANITIZER picks the sanitizer (default: address; `none` runs faster).
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
sanitizer=${FUZZ_SANITIZER:-address}

cargo +nightly fuzz build --sanitizer "$sanitizer"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
    log="artifacts/$target/last-run.log"
    printf '\n==> %s for %s s\n' "$target" "$seconds"
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        echo "ok: ${runs:-?} executions"
    else
        echo "FAILED: see fuzz/$log"
        tail -n 40 "$log"
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    printf '\nfuzz targets that failed: %s\n' "${failed[*]}" >&2
    exit 1
fi
