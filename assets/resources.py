"""Outside systems as Dagster resources with small interfaces.

Fields left empty fall back to the settings (``RAGTUNE_*``), read when a run
uses the resource, never at import. Tests pass real resources pointed at a
temporary data home.
"""

import dagster as dg
from pydantic import Field

from ragtune.behaviour.interactions import InteractionLog
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.live_index import LiveIndex, embedder_for, live_store, open_live
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import Settings, load_settings


class EmbedderResource(dg.ConfigurableResource):
    """The sentence embedder used for chunks and queries."""

    model: str | None = Field(
        None, description="The configured embedder (id or path); empty = RAGTUNE_EMBEDDER or the bundled MiniLM."
    )
    home: str | None = Field(None, description="Data home whose live index pointer names the embedder; empty = RAGTUNE_HOME.")

    def settings(self) -> Settings:
        return load_settings(home=self.home, embedder=self.model)

    def get(self) -> Embedder:
        """The embedder that built the live index (knowledge/live_index.py), or a clear mismatch error."""
        return embedder_for(self.settings())

    def open_live(self) -> tuple[LiveIndex, ChunkStore, Embedder]:
        """The live table and the embedder that built it, from one reading of the pointer."""
        return open_live(self.settings())


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB database in the data home that holds the chunk table."""

    home: str | None = Field(None, description="Data home; empty = RAGTUNE_HOME (default ./.ragtune).")

    def settings(self) -> Settings:
        return load_settings(home=self.home)

    def store(self, dim: int) -> ChunkStore:
        s = self.settings()
        return live_store(s, dim)


class InteractionLogResource(dg.ConfigurableResource):
    """The interaction log (sqlite in the data home, or a server database)."""

    url: str | None = Field(None, description="SQLAlchemy URL; empty = RAGTUNE_INTERACTIONS_URL or sqlite in the data home.")
    home: str | None = Field(None, description="Data home; empty = RAGTUNE_HOME.")

    def settings(self) -> Settings:
        return load_settings(home=self.home)

    def get(self) -> InteractionLog:
        return InteractionLog(self.url or self.settings().interactions_db)


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking and the adapter registry."""

    tracking_uri: str | None = Field(
        None, description="Tracking/registry URI; empty = RAGTUNE_MLFLOW_TRACKING_URI or sqlite in the data home."
    )
    registered_model: str | None = Field(None, description="Registered model name; empty = RAGTUNE_REGISTERED_MODEL.")
    home: str | None = Field(None, description="Data home; empty = RAGTUNE_HOME.")

    def settings(self) -> Settings:
        return load_settings(home=self.home)

    def uri(self) -> str:
        return self.tracking_uri or self.settings().tracking_uri

    def model_name(self) -> str:
        return self.registered_model or self.settings().registered_model
