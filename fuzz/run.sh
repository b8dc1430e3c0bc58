#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) with ASan on stable
# (RUSTC_BOOTSTRAP=1). Seeds come from fuzz/seeds/<target>; the growing corpus is kept in
# fuzz/corpus/<target> (not committed). Crashes land in fuzz/artifacts/<target>/ and are
# replayed by `cargo test --test fuzz_replay` once committed.
#   fuzz/run.sh [seconds] [target...]
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
# A failed non-bootstrap probe is cached here and breaks later runs (STACK.md §5).
rm -f target/.rustc_info.json
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t (${secs}s)"
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 \
        | grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|==[0-9]+==ERROR|SUMMARY)' || true
done
