#!/usr/bin/env bash
# Answers to names, years and counts of two made-up documents (examples/), from the compressed document
# and from the full context: results/training/2026-11-27-h100x4-scale/documents/answers.txt.
# COMPRESSORS: weights folders to compare (default: the shipped one). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIGHTHOUSE=("Who was the last keeper?" "Where was the lens made?" "Who designed the lighthouse?"
  "In which year was the lighthouse first lit?" "How tall is the tower?" "In which year was the light fully automated?"
  "How many nautical miles away can the light be seen?" "How many assistants did the keeper have?")
OBSERVATORY=("Who founded the observatory?" "In which year was the observatory founded?" "Who was the last director?"
  "In which year did the observatory close to research?" "How many assistants did the observatory employ?"
  "How many turns does the crank need to open the slit?" "Where was the lens made?" "How many plates did the collection hold by 1950?")
echo "# comprexit ask on made-up documents, bundled Gemma-3-270M, CPU float32, commit $(git rev-parse --short=12 HEAD), $(date -u +%F)"
for document in lighthouse observatory; do
  if [ $document = lighthouse ]; then questions=("${LIGHTHOUSE[@]}"); else questions=("${OBSERVATORY[@]}"); fi
  for compressor in ${COMPRESSORS:-shipped} full-context; do
    echo; echo "## examples/$document.txt, $compressor"
    case $compressor in
      shipped) python -m comprexit ask --context-file examples/$document.txt --device cpu "${questions[@]}" 2>/dev/null ;;
      full-context) python -m comprexit ask --context-file examples/$document.txt --device cpu --full-context "${questions[@]}" 2>/dev/null ;;
      *) python -m comprexit ask --compressor "$compressor" --context-file examples/$document.txt --device cpu "${questions[@]}" 2>/dev/null ;;
    esac
  done
done
