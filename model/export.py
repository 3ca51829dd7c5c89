"""ONNX export that checks itself against torch. Filled by the Siamese work."""
