#!/usr/bin/env bash
# Runs every test and ends with one summary line: "N passed, N failed".
set -uo pipefail
# snapshots are compared, never written, here: `INSTA_UPDATE=always cargo test` updates them
export INSTA_UPDATE=no
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
