"""What goes in: the file readers, splits, task adapters and their registry, metrics."""
