"""CLI command modules; each exposes register(cli) and imports heavy libraries lazily."""
