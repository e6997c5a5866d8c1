"""The engine: the token manager, its flights and their steps, and what it reports."""
