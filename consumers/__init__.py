"""Partner side: projectors into each agency's own index, and its search."""
