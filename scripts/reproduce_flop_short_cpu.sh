#!/usr/bin/env bash
# Short-budget CPU evidence for FLOP (issue 15): the small SRU on the first 300k training bytes of a
# byte-level corpus: dense vs FLOP 50% / 80% vs AGP 80% vs a matched-size dense SRU, 3 seeds
# (conf/experiment/flop_evidence_cpu.yaml: the corpus' own vocabulary, data.vocab=unique, so that FLOP and AGP
# prune the same 300,032 parameters; the dense rows are its own, not lm_evidence_cpu's 256-byte ones).
#
#   bash scripts/reproduce_flop_short_cpu.sh ../shared/data/pydocs/pydocs-3.11.txt.gz
# Label the results with the corpus' own name (LABEL=...), never as enwik8.
set -euo pipefail
corpus=${1:?usage: $0 CORPUS_FILE (plain, .gz or .zip)}
label=${LABEL:-"pydocs-3.11 (Python docs, 11 MB)"}
prune-exp -m experiment=flop_evidence_cpu "data.path=$corpus" "data.label='$label'" quiet=true
prune-report flop_evidence_cpu
