"""Torch-free fluke detection: ONNX detector and classical fallback. Filled by the detector work."""
