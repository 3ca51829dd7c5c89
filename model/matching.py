"""Torch-free matching (numpy, OpenCV, onnxruntime). Filled by the inference work."""
