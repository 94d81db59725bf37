"""Persistence: Core tables, repositories (plain functions of a connection), migrations."""
