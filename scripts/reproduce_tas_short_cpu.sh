#!/usr/bin/env bash
# Short-budget evidence for TAS on real CIFAR-10, small enough for 2 CPU cores: ResNet-20,
# first 10,000 training images, the dense baseline of the other short-budget scripts (8 epochs,
# cached), a 4-epoch TAS search (batch 128 per half) toward -45% FLOPs (the paper's ResNet-20
# row), then scratch-E 8 epochs WITH knowledge distillation (alpha 0.9, T 4) and WITHOUT it
# (ablation), and fine-tuning from the supernet's weights (2 epochs, KD). Seed 0.
# NOT the paper's budget (600 search epochs, 300+5 retrain epochs): tables are labelled.
#
#   bash scripts/reproduce_tas_short_cpu.sh /path/holding/cifar-10-batches-py
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_cifar-10-batches-py}
label=${LABEL:-"CIFAR-10 (JPEG q75 copy)"}
common=(data=cifar10 "data.root=$root" "data.label='$label'" data.train_subset=10000
        model=resnet20 method=tas method.ratio=0.45 method.search_epochs=4 method.batch_size=128
        schedule.epochs=8 schedule.finetune_epochs=2 seed=0 quiet=true)
prune-exp "${common[@]}" finetune=scratch_e
prune-exp "${common[@]}" finetune=scratch_e method.kd=false
prune-exp "${common[@]}" finetune=finetune
prune-report
