"""A task module that cannot be imported, as after a bad deploy."""

raise ImportError("this module is broken on purpose")
