"""Shared test configuration. Fixture modules are plugins so that each stays one page."""

pytest_plugins: list[str] = []
