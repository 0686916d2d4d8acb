"""Test doubles and helpers shared across the test folders (``from tests.support.fakes import ...``)."""
