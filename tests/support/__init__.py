"""What tests and benchmarks share: a throwaway PostgreSQL, builders, broker fixtures."""
