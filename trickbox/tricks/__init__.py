"""Built-in tricks, one module each. They register through the ``trickbox.tricks`` entry points."""
