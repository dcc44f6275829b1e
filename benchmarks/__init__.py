"""Benchmarks: input pipeline versus step, our loop versus Keras fit."""
