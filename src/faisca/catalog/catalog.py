"""The catalog: every known card, resolvable by slug, Hugging Face id or alias."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.resources import files
from pathlib import Path

from pydantic import ValidationError

from faisca.catalog.card import LoraAdapterRef, ModelCard, PathWeights, Runtime
from faisca.catalog.ids import slugify
from faisca.errors import ModelNotFound

SHIPPED_CARDS_DIR = Path(str(files("faisca.catalog").joinpath("cards")))


class CardError(ValueError):
    """A card file that does not validate: raised at start-up, naming the file."""


def load_cards(directory: Path) -> list[ModelCard]:
    cards = []
    for path in sorted(directory.glob("*.toml")):
        try:
            cards.append(ModelCard.from_toml(path))
        except (ValidationError, ValueError) as exc:
            raise CardError(f"invalid model card {path}: {exc}") from exc
    return cards


class Catalog:
    def __init__(self, cards: Iterable[ModelCard]) -> None:
        self._cards: dict[str, ModelCard] = {}
        self._names: dict[str, str] = {}
        for card in cards:
            self._add(card)

    @classmethod
    def from_dirs(cls, *directories: Path) -> Catalog:
        """Shipped cards first; a card in a later directory replaces one with the same id."""
        by_id: dict[str, ModelCard] = {}
        for directory in (SHIPPED_CARDS_DIR, *directories):
            for card in load_cards(directory):
                by_id[card.id] = card
        return cls(by_id.values())

    def _add(self, card: ModelCard) -> None:
        self._cards[card.id] = card
        for name in (card.id, card.hf_id, *card.aliases):
            self._names[name.lower()] = card.id

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self._cards.values())

    def __len__(self) -> int:
        return len(self._cards)

    def resolve(self, name: str) -> ModelCard:
        card_id = self._names.get(name.lower()) or self._names.get(slugify(name))
        if card_id is None:
            raise ModelNotFound(f"The model `{name}` does not exist. Known models: {', '.join(self._cards)}.", param="model")
        return self._cards[card_id]

    def with_weights_path(self, name: str, gguf_path: Path, *, projector_path: Path | None = None) -> Catalog:
        """A catalog where the card `name` runs from a local GGUF file (`faisca serve --weights ID=PATH`), reading
        images through `projector_path` if one is given."""
        card = self.resolve(name)
        changes: dict[str, object] = {"weights": PathWeights(kind="path", path=gguf_path)}
        if projector_path is not None:
            changes["projector"] = PathWeights(kind="path", path=projector_path)
        runtime = Runtime.model_validate({**card.runtime.model_dump(), **changes})
        updated = card.model_copy(update={"runtime": runtime, **({"input": "text+image"} if projector_path else {})})
        return Catalog(updated if c.id == card.id else c for c in self)

    def with_upstream(self, name: str, urls: tuple[str, ...]) -> Catalog:
        """A catalog where the card `name` is served by OpenAI-compatible servers at `urls` (`faisca serve --upstream
        ID=URL`): the card's own weights are not loaded here."""
        card = self.resolve(name)
        runtime = Runtime.model_validate({**card.runtime.model_dump(), "engine": "upstream", "urls": urls,
                                          "weights": None, "projector": None})
        updated = card.model_copy(update={"runtime": runtime})
        return Catalog(updated if c.id == card.id else c for c in self)

    def with_loras(self, name: str, adapters: tuple[tuple[str, Path], ...]) -> Catalog:
        """A catalog where the card `name` is served with these LoRA adapters (`faisca serve --lora NAME=PATH`) besides
        its card's own. ValueError if the card says it takes none."""
        card = self.resolve(name)
        loras = (*card.runtime.loras, *(LoraAdapterRef(name=adapter, path=path) for adapter, path in adapters))
        runtime = Runtime.model_validate({**card.runtime.model_dump(), "loras": [ref.model_dump() for ref in loras]})
        updated = ModelCard.model_validate({**card.model_dump(exclude={"id"}), "runtime": runtime.model_dump()})
        return Catalog(updated if c.id == card.id else c for c in self)

    def with_card(self, card: ModelCard) -> Catalog:
        """A catalog that also holds `card` (replacing one with its id)."""
        return Catalog([*(c for c in self if c.id != card.id), card])
