#!/usr/bin/env bash
# Short-budget evidence for Pruning from Scratch on real CIFAR-10 (issue 11, item 7), small enough
# for 2 CPU cores: PFS's ResNet-20 (projection shortcuts), first 5,000 training images, ~49% of the
# FLOPs removed by three methods, each trained from scratch with scratch-B (4 x F_dense / F_pruned
# = 7-8 epochs, schedule=pfs_cifar: SGD lr 0.1, wd 1e-4, batch 128), seeds 0, 1, 2:
#   * PFS: gates on random weights of the e = 32 net, 2 gate epochs (official 10), budget search to
#     49.14% -- what uniform L1-norm at ratio 0.5 removes on this net (mids 8/16/32);
#   * L1-norm: ratio 0.5 of every block's mid filters of the dense net pretrained 4 epochs;
#   * Network Slimming: 55% of the mid channels by one |gamma| threshold of the dense net
#     pretrained 4 epochs with L1 on BN scales (s = 1e-5); its FLOPs reduction follows the scales.
# Dense baselines are cached (one per method and seed); each run records per stage its training
# cost (samples x forward MACs): pretraining for L1 / Slimming, gate learning for PFS.
# NOT the paper's budget (10 gate epochs on 45k images, 160 / (1 - p) scratch-B epochs on 50k).
# These are the runs of `prune-exp -m experiment=pfs_evidence_cpu` (same configs, same run dirs).
#
#   bash scripts/reproduce_pfs_short_cpu.sh DIR      # DIR holds (or receives) cifar-10-batches-py
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_cifar-10-batches-py}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$root/cifar-10-batches-py" ]; then  # the CIFAR-10 JPEG copy (needs numpy + Pillow)
  "${PYTHON:-python}" "$here/../shared/data/cifar10/prepare.py" "$root"
fi
label=${LABEL:-"CIFAR-10 (JPEG q75 copy)"}
common=(data=cifar10 "data.root=$root" "data.label='$label'" data.train_subset=5000
        model=resnet20_pfs schedule=pfs_cifar schedule.epochs=4 finetune=scratch_b quiet=true)
for seed in 0 1 2; do
  prune-exp "${common[@]}" method=pfs method.ratio=0.4914 method.gate_epochs=2 seed=$seed
  prune-exp "${common[@]}" method=l1_norm method.ratio=0.5 seed=$seed
  prune-exp "${common[@]}" method=network_slimming method.ratio=0.55 method.sparsity=1e-5 seed=$seed
done
prune-report pfs_evidence_cpu
