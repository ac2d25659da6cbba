"""What the tests, the benchmarks and the demo stand in for an LLM with: a local Anthropic-compatible backend."""
