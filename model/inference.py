"""Torch-free inference (numpy, OpenCV, onnxruntime). Filled by the inference work."""
