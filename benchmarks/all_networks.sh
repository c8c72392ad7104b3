#!/bin/sh
# Every network's bench beside PyTorch, one after another, as docs/performance.md reports them.
#   sh benchmarks/all_networks.sh /tmp/torchvenv/bin/python
# The cached sparse thresholds are deleted first, so that they are measured afresh on this machine.
set -e
PY=${1:?give the Python whose torch to compare with, e.g. /tmp/torchvenv/bin/python}
cd "$(dirname "$0")/.."
rm -f "${MINILOTTERY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/minilottery}/sparse-thresholds.json"
date
python cli.py bench --net lenet --densities 1,0.2,0.05,0.014 --seconds 15 --compare-torch --torch-python "$PY"
for net in conv2 conv4 conv6 resnet18 vgg19; do
  date
  python cli.py bench --net $net --seconds 20 --compare-torch --torch-python "$PY"
done
date
