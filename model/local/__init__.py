"""Training-free identification: local features (RootSIFT), a descriptor index with LNBNN voting,
spatial verification, and calibration of the resulting scores. Torch-free (numpy, OpenCV, faiss, scipy).
"""
