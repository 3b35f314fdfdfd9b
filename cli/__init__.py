"""The command line: the one place that wires every stage together."""
