"""edgecc factory."""
