"""Package data read at run time through importlib.resources."""
