"""Settings, read from ``MAILFLEET_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every setting of a fleet, with its embedded default.

    Each field ``name`` is read from the environment variable ``MAILFLEET_NAME``.
    """

    model_config = SettingsConfigDict(
        env_prefix="MAILFLEET_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(Path(".mailfleet"), description="folder for embedded state (SQLite file)")
    database_url: str | None = Field(
        None,
        description="sqlite:///PATH or postgresql://USER@HOST/DB; default: SQLite under home",
    )
    application: str = Field("default", description="the application (tenant) this fleet runs")
    dev_mode: bool = Field(True, description="register agents' domains automatically")
    provision_batch_size: int = Field(
        1000, ge=1, le=10_000, description="addresses per transaction in bulk provisioning"
    )

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the SQLite file under ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'mailfleet.db'}"
