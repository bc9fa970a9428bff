#!/usr/bin/env bash
# Short-budget evidence for the L1-norm flow on real CIFAR-10, small enough for 2 CPU cores:
# ResNet-20, first 10,000 training images, 8 pretrain epochs, 2 fine-tune epochs at lr 1e-3,
# scratch-E 8 epochs, scratch-B 8 x FLOPs ratio; uniform L1 ratios 0.3 / 0.5 / 0.6, seed 0.
# NOT the paper's budget: the table it produces is labelled with data and budget.
#
#   bash scripts/reproduce_l1_short_cpu.sh /path/holding/cifar-10-batches-py
# The CIFAR-10 JPEG copy on the dev machines: python3 ../shared/data/cifar10/prepare.py DIR
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_cifar-10-batches-py}
label=${LABEL:-"CIFAR-10 (JPEG q75 copy)"}
common=(data=cifar10 "data.root=$root" "data.label='$label'" data.train_subset=10000
        model=resnet20 method=l1_norm schedule.epochs=8 schedule.finetune_epochs=2 seed=0 quiet=true)
prune-exp -m "${common[@]}" method.ratio=0.5 finetune=finetune,scratch_e,scratch_b
prune-exp -m "${common[@]}" method.ratio=0.3,0.6 finetune=finetune
prune-report
