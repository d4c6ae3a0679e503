"""A tiny experiment on the generated slides of ``batch_sources``: a 2-level U-Net, 3 epochs.

Used by the training and CLI tests; it runs in a few seconds on two cores.
"""

from __future__ import annotations

import yaml

PARAMETERS = yaml.safe_load(
    """
model:
  type: 'unet'
  name: 'tiny unet'
  depth: 2
  branching factor: 2
  padding: 'same'
  batch norm: true
  loss: 'cross_entropy'
system:
  process count: 0
  pool size: 4
training:
  epoch count: 3
  metric name: 'validation accuracy'
  higher is better: true
  averaging length: 1
  learning:
    learning rate: 0.01
  boosting:
    enabled: true
    buffer mode switch: 1
    difficult threshold: 0.5
    difficult update ratio: 0.5
  iterations:
    training: {repetition count: 2, iteration count: 2, batch size: 4}
    validation: {repetition count: 1, iteration count: 2, batch size: 4}
data:
  images:
    patch shapes: {1.0: [32, 32]}
  labels:
    mask pixel spacing: 2.0
    label mode: 'synthesize'
    label map: {0: 0, 1: 1, 2: 1}
    label ratios: {0: 1.0, 1: 1.0, 2: 1.0}
  normalization: {enabled: true, type: 'rgb_to_0-1'}
  purposes: {training: 0.6, validation: 0.4}
"""
)
