"""Model facts as data: cards, the catalog that resolves ids to them, and each model's request schema."""

from faisca.catalog.card import ModelCard
from faisca.catalog.catalog import Catalog
from faisca.catalog.ids import slugify

__all__ = ["Catalog", "ModelCard", "slugify"]
