"""Running workers: the CLI, the spec and its environment, the process and its stream, the proof, the colony."""
