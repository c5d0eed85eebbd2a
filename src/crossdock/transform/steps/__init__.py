"""The built-in steps; importing this package fills the STEPS registry."""

from crossdock.transform.steps import convert, fields, flow, storage, strings, xmljson

__all__ = ["convert", "fields", "flow", "storage", "strings", "xmljson"]
