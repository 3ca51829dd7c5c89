"""Torch-free heatmap (numpy, OpenCV, onnxruntime). Filled by the inference work."""
