#!/usr/bin/env bash
# Short-budget CPU evidence for ANP-VS (issue 12): LeNet-5-Caffe, Standard / BP / AT / ANP-VS,
# 3 seeds, on the 5k MNIST sample and on Fashion-MNIST (first 4,000 training images), PGD-40
# evaluation (conf/experiment/anp_evidence_cpu.yaml). Measured: 47 min (MNIST) and 52 min
# (Fashion-MNIST) on 2 CPU cores that other jobs shared; less on idle cores.
#
#   bash scripts/reproduce_anp_short_cpu.sh ../shared/data      # holds mnist-5k/ and fashion-mnist/
set -euo pipefail
root=${1:?usage: $0 DIR_WITH_mnist-5k_AND_fashion-mnist}
prune-exp -m experiment=anp_evidence_cpu data=mnist "data.root=$root/mnist-5k" 'data.label="MNIST (5k subset)"' quiet=true
prune-exp -m experiment=anp_evidence_cpu data=fashion_mnist "data.root=$root/fashion-mnist" 'data.label=Fashion-MNIST' quiet=true
prune-report anp_evidence_cpu anp_mnist
