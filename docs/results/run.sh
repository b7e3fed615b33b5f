#!/usr/bin/env bash
# The runs whose directories are here, one after another. Rerun to resume: a run directory that exists with
# the same config continues where it stopped, and a finished one has nothing left to do. Every directory
# keeps its config.json (every setting), runtime.json (where it ran), results.jsonl and summary.json.
set -u
cd "$(dirname "$0")/../.."
SQUAD=${SQUAD:-$(cd ../shared/data && pwd)/squad_dev200.json}
seal=${SEAL:-.venv/bin/seal}
run() { name=$1; shift; echo "$(date -u +%T) $name: seal $*"; "$seal" "$@" --out "docs/results/$name" --no_progress; }
run demo-defaults demo
run squad-20-defaults eval --data "$SQUAD" --limit 20
run squad-20-cpu-paper eval --preset cpu-paper --data "$SQUAD" --limit 20
run train-cpu-paper train --preset cpu-paper --limit 6
