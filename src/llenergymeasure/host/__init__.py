"""The host side's own files: the manifest of its share, earlier attempts still running."""
