#!/usr/bin/env bash
# Short-budget CPU evidence for the language-model pipeline (issue 14): a small SRU and a small
# Transformer-XL on the first 300k training bytes of a byte-level corpus, dense and magnitude 50%,
# bits per character on its last 2 x 50k bytes (valid / test), 3 seeds (conf/experiment/lm_evidence_cpu.yaml).
#
#   bash scripts/reproduce_lm_short_cpu.sh ../shared/data/pydocs/pydocs-3.11.txt.gz
# Label the results with the corpus' own name (LABEL=...), never as enwik8.
set -euo pipefail
corpus=${1:?usage: $0 CORPUS_FILE (plain, .gz or .zip)}
label=${LABEL:-"pydocs-3.11 (Python docs, 11 MB)"}
prune-exp -m experiment=lm_evidence_cpu "data.path=$corpus" "data.label='$label'" quiet=true
prune-report lm_evidence_cpu
