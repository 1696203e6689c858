"""te_gpu: transferability estimation for whole model zoos, batched on GPU or CPU."""
__version__ = "0.1.0"
