#!/usr/bin/env bash
# Runs every Go fuzz test in the module for the given time each.
#
# Go 1.26's fuzz coordinator can fail a run with "context deadline
# exceeded" at the end of -fuzztime although no input failed
# (golang/go#75804, fixed in Go 1.27). Such a run writes no new file under
# testdata/fuzz/, so a failure with that message and no new file is
# reported as a warning. A failure that wrote an input still fails.
#
# Go minimizes every input that finds new coverage for up to
# -fuzzminimizetime (60 s by default), and the run counts no executions
# meanwhile; one such input could take up all of a 30 s run. The bound
# here (FUZZ_MINIMIZE, 5 s by default) leaves the time for fuzzing. A
# failing input is still written, minimized for at most that long.
set -euo pipefail
fuzztime=${1:-30s}
minimize=${FUZZ_MINIMIZE:-5s}
cd "$(dirname "$0")/.."

corpus_files() {
  find "$1" -type f 2>/dev/null | sort || true
}

for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fn in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $fn ($fuzztime)"
    corpus="$dir/testdata/fuzz/$fn"
    before=$(corpus_files "$corpus")
    log=$(mktemp)
    if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" 2>&1 | tee "$log"; then
      rm -f "$log"
      continue
    fi
    after=$(corpus_files "$corpus")
    if [ "$before" = "$after" ] && grep -q 'context deadline exceeded' "$log"; then
      echo "warning: $fn stopped with the Go fuzz coordinator's deadline error and wrote no failing input (golang/go#75804); not a failure"
      rm -f "$log"
      continue
    fi
    rm -f "$log"
    exit 1
  done
done
