"""What runs inside a backend container: the experiment, its backends, prompts, tiny models."""
