"""Tiny local diffusion models: built from the real diffusers classes for tests and the offline default."""
