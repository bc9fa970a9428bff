#!/usr/bin/env bash
# Short-budget evidence for magnitude pruning, Network Slimming, ThiNet and LASSO channel pruning on real CIFAR-10, sized
# for 2 CPU cores: ResNet-20, first 10,000 training images, 8 pretrain epochs (magnitude
# reuses the L1 evidence's cached baseline; slimming trains its own with s = 1e-4),
# 2 fine-tune epochs at lr 1e-3, scratch-E 8 epochs, scratch-B by the FLOPs ratio; seed 0.
# NOT the paper's budget: tables are labelled with data and budget.
#   bash scripts/reproduce_methods_short_cpu.sh /path/holding/cifar-10-batches-py
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_cifar-10-batches-py}
label=${LABEL:-"CIFAR-10 (JPEG q75 copy)"}
common=(data=cifar10 "data.root=$root" "data.label='$label'" data.train_subset=10000
        model=resnet20 schedule.epochs=8 schedule.finetune_epochs=2 seed=0 quiet=true)
prune-exp -m "${common[@]}" method=magnitude method.ratio=0.5 finetune=finetune,scratch_e,scratch_b
prune-exp -m "${common[@]}" method=magnitude method.ratio=0.8 finetune=finetune
prune-exp -m "${common[@]}" method=network_slimming method.sparsity=1e-4 method.ratio=0.3,0.5 finetune=finetune
prune-exp -m "${common[@]}" method=thinet method.ratio=0.3,0.5 finetune=finetune
# LASSO channel pruning (He et al.), layer-wise (inputs from the net pruned so far, dense targets)
prune-exp -m "${common[@]}" method=channel_pruning method.mode=layerwise method.ratio=0.3,0.5 finetune=finetune
prune-exp -m "${common[@]}" method=channel_pruning method.mode=layerwise method.ratio=0.5 finetune=scratch_e,scratch_b
# Network Slimming on the paper's CIFAR-10 model: VGG-19, s = 1e-4, 70% of BN channels (the paper's row)
prune-exp -m data=cifar10 "data.root=$root" "data.label='$label'" data.train_subset=10000 model=vgg19 \
  schedule.epochs=8 schedule.finetune_epochs=2 seed=0 quiet=true \
  method=network_slimming method.sparsity=1e-4 method.ratio=0.7 finetune=finetune,scratch_e
prune-report
