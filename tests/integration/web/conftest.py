"""The web tests' fixtures; they live in :mod:`webenv` with the helpers the test modules import."""

from webenv import env, shop

__all__ = ["env", "shop"]
