#!/usr/bin/env bash
# Short-budget CPU evidence for SANP (issue 13): ResNet-20 on the first 10,000 CIFAR-10 training
# images, SANP at 50% / 70% of the mean MACs removed vs L1-norm (fine-tuned, scratch-B) at about the
# same MACs, 3 seeds (conf/experiment/sanp_evidence_cpu.yaml).
#
#   bash scripts/reproduce_sanp_short_cpu.sh DIR_WITH_cifar-10-batches-py
# The CIFAR-10 JPEG copy on the dev machines: python3 ../shared/data/cifar10/prepare.py DIR
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_cifar-10-batches-py}
label=${LABEL:-"CIFAR-10 (JPEG q75 copy)"}
prune-exp -m experiment=sanp_evidence_cpu "data.root=$root" "data.label='$label'" quiet=true
prune-report sanp_evidence_cpu
