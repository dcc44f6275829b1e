"""Runnable training tasks (python -m trainers.cifar, trainers.mnist, ...)."""
