#!/bin/bash
# Fuzzes the mount-option parser and the layer-tar importer (issue 6).
#
#   scripts/fuzz.sh [SECONDS]      # default 60 s per target
#
# With a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz), runs the libFuzzer
# targets in fuzz/ (mount_options, layer_import), each for SECONDS, starting from the
# seeds in fuzz/seeds/<target>; a crash leaves its input in fuzz/artifacts/<target>/ and
# the script fails: add that input to tests/fuzz_inputs.rs as a regression case.
# Without them (the machine cannot download toolchains), it runs the stable randomized
# fuzzer in tests/fuzz_inputs.rs for the same time instead (CI runs it briefly).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"

if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly fuzz --version >/dev/null 2>&1; then
    status=0
    for t in mount_options layer_import; do
        corpus="fuzz/corpus/$t"
        mkdir -p "$corpus" "fuzz/artifacts/$t"
        echo "== cargo fuzz: $t for ${secs}s"
        # -close_fd_mask=2: the importer reports refusals on stderr, by design.
        extra=()
        [ "$t" = layer_import ] && extra=(-close_fd_mask=2)
        if ! (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
                -max_total_time="$secs" "${extra[@]}"); then
            echo "fuzz.sh: $t found a crash: see fuzz/artifacts/$t/" >&2
            status=1
        fi
    done
    exit $status
fi

echo "== no nightly toolchain with cargo-fuzz: stable randomized fuzzing for ${secs}s per target"
STRATAFS_FUZZ_SECS="$secs" cargo test --release --test fuzz_inputs -- --nocapture
