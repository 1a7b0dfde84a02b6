"""A module that cannot be imported: preloading it makes every process child die at start."""

raise ImportError("tests.broken_module refuses to be imported")
