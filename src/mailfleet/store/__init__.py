"""Persistence: SQLModel tables, repositories (plain functions of a connection), migrations."""
