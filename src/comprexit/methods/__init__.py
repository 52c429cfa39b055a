"""Methods that let the frozen decoder see a context, found through a registry."""

from .base import DecoderPrefix, Method, available_methods, create_method, register_method

__all__ = ["DecoderPrefix", "Method", "available_methods", "create_method", "register_method"]
