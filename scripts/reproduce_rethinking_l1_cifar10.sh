#!/usr/bin/env bash
# Rethinking the Value of Network Pruning (Liu et al., ICLR 2019), Table 1, CIFAR-10 rows:
# L1-norm VGG-16-A, ResNet-56-A/B, ResNet-110-A/B x {fine-tuned, scratch-E, scratch-B} x 5 seeds
# at the paper's budget (160 + 40 / 160 / 160 x FLOPs-ratio epochs). Needs a GPU to be practical.
#   DATA_ROOT=/path/holding/cifar-10-batches-py bash scripts/reproduce_rethinking_l1_cifar10.sh
set -euo pipefail
root=${DATA_ROOT:-data/cifar10}
extra=()
[ -n "${LABEL:-}" ] && extra+=("data.label='$LABEL'")
# architecture counts first (seconds, no data): fills the FLOPs/params columns
prune-exp -m experiment=rethinking_l1_cifar10 dry_run=true seed=0 finetune=finetune quiet=true
prune-exp -m experiment=rethinking_l1_cifar10 "data.root=$root" quiet=true "${extra[@]}"
prune-report rethinking_l1_cifar10
