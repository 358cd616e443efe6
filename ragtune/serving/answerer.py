"""Answer a question with citations: retrieve for the caller, generate with the champion, log the interaction.

    answerer = Answerer.from_settings(load_settings())
    answer = answerer.answer("How do I classify images?", user="ana", groups=["staff"])

Retrieval is filtered by the caller's access groups inside the index search, and
citations are resolved only against what was retrieved for this caller, so a
document outside their groups is never quoted or cited, whatever the model writes.
The model is the base model plus the adapter the registry's `champion` alias
points at (the base model alone before any release); `ModelSlot` swaps it whole
when the alias moves, and a request in flight finishes on the model it started with.
A released adapter carries the relevance floor measured when it was trained
(ragtune.knowledge.relevance): a context less related to the question than that is
declined with the not-covered reply, without asking the model (`below_floor`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field

from ragtune import registry
from ragtune.behaviour.interactions import InteractionLog, RecordError
from ragtune.knowledge.relevance import RelevanceFloor, below, relevance, tagged_floor
from ragtune.knowledge.retriever import Hit, LiveRetriever
from ragtune.llm.generator import Generator
from ragtune.llm.prompting import NOT_COVERED
from ragtune.settings import Settings

log = logging.getLogger(__name__)

BASE = "base"  # model_version reported while no adapter is released
QUOTE_CHARS = 300


@dataclass
class Citation:
    doc_id: str
    chunk_id: str
    title: str
    quote: str


@dataclass
class Answer:
    id: str
    answer: str
    citations: list[Citation]
    model_version: str
    index_version: str
    latency_ms: float
    retrieval_ms: float
    generation_ms: float
    fallback: bool  # the model's reply was not answer JSON; `answer` says so and carries the raw text
    retrieved: list[str] = field(default_factory=list)  # doc ids in the context, best first (this caller's view)
    tokens: int = 0
    dropped_citations: int = 0  # cited ids that were not in this caller's retrieved context
    below_floor: bool = False  # declined without generating: the context is less related than the model's floor

    def as_dict(self) -> dict:
        return asdict(self)


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def resolve_citations(cited: list[str], hits: list[Hit]) -> tuple[list[Citation], int]:
    """Cited doc ids -> the best-ranked retrieved chunk of each; ids not retrieved for this caller are dropped."""
    best: dict[str, Hit] = {}
    for hit in hits:
        best.setdefault(hit.doc_id, hit)
    resolved, seen, dropped = [], set(), 0
    for doc_id in cited:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        hit = best.get(doc_id)
        if hit is None:
            dropped += 1
            continue
        resolved.append(Citation(doc_id=hit.doc_id, chunk_id=hit.chunk_id, title=hit.title, quote=quote(hit.text)))
    return resolved, dropped


def logged_context(hits: list[Hit]) -> list[dict]:
    """What the interaction log keeps of the context: ids and scores, not the text (the index has it)."""
    return [{"doc_id": h.doc_id, "chunk_id": h.chunk_id, "score": h.score, "similarity": h.similarity} for h in hits]


@dataclass
class LoadedModel:
    version: str  # a registry version, or BASE
    generator: Generator
    loaded_at: float = field(default_factory=time.time)
    floor: RelevanceFloor | None = None  # measured when the adapter was trained; none for the base model


class ModelSlot:
    """The model serving now; `sync()` follows the `champion` alias and swaps in a fully loaded replacement.

    Swapping replaces one reference: requests that already hold the old model finish on it,
    new requests get the new one. Loading happens beside serving, never in a request's path
    when called from the server's watcher thread.
    """

    def __init__(self, settings: Settings, base_model: str, max_new_tokens: int, alias: str = registry.CHAMPION):
        self.settings = settings
        self.base_model = base_model
        self.max_new_tokens = max_new_tokens
        self.alias = alias  # champion: the base model while none is released; another alias: nothing while unset
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self.last_error: str | None = None

    def wanted(self) -> str | None:
        version = registry.resolve(self.settings.tracking_uri, self.settings.registered_model, self.alias)
        return version or (BASE if self.alias == registry.CHAMPION else None)

    def floor_of(self, version: str) -> RelevanceFloor | None:
        """The relevance floor a version is served with, read from its tags now. The embedder is checked per
        request (`Answerer.below_floor`): an index refresh may change it under a loaded model."""
        if version == BASE:
            return None
        tags = registry.version_tags(self.settings.tracking_uri, self.settings.registered_model, version)
        return tagged_floor(tags, self.settings.relevance_floor_quantile > 0)

    def load(self, version: str) -> LoadedModel:
        adapter = None
        if version != BASE:
            adapter = str(
                registry.download_adapter(
                    self.settings.tracking_uri, self.settings.registered_model, version, self.settings.adapters_dir
                )
            )
        return LoadedModel(
            version,
            Generator(
                self.base_model,
                adapter,
                max_new_tokens=self.max_new_tokens,
                dtype=self.settings.dtype,
                constrained=self.settings.constrained_decoding,
            ),
            floor=self.floor_of(version),
        )

    def sync(self) -> bool:
        """Load the champion if it is not what serves now; True when the model changed. The floor of the model
        already loaded is read again.

        A failed load (registry down, broken artifact) keeps the current model serving and
        is reported in `last_error`; with nothing loaded yet it raises.
        """
        with self._load_lock:
            try:
                version = self.wanted()
                if (self._current.version if self._current else None) == version:
                    if version is not None:  # tags change after a load: the challenger's evaluation may drop its floor
                        self._current.floor = self.floor_of(version)
                    self.last_error = None
                    return False
                loaded = None if version is None else self.load(version)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._current is None:
                    raise
                log.error("could not load the champion, still serving %s: %s", self._current.version, self.last_error)
                return False
            previous, self._current, self.last_error = self._current, loaded, None
            if previous is not None:
                now = loaded.version if loaded else "nothing"
                log.warning("%s moved: now serving %s (was %s)", self.alias, now, previous.version)
            return True

    @property
    def current(self) -> LoadedModel | None:
        """What serves now (None before the first load)."""
        return self._current

    def get(self) -> LoadedModel:
        if self._current is None:
            self.sync()
        return self._current


class Answerer:
    """Answers with the champion adapter over the live index; follows both when they change under it."""

    def __init__(
        self, settings: Settings, slot: ModelSlot, interactions: InteractionLog, k: int, shadow_slot: ModelSlot | None = None
    ):
        self.settings = settings
        self.slot = slot
        self.shadow_slot = shadow_slot  # the challenger, when shadowing is on
        self.interactions = interactions
        self.k = k
        self.live = LiveRetriever(settings)

    @classmethod
    def from_settings(cls, settings: Settings, max_new_tokens: int | None = None, k: int | None = None) -> Answerer:
        from ragtune.llm.base_model import resolve_base_model

        base_model = str(resolve_base_model(settings.base_model, settings.models_dir))
        budget = max_new_tokens or settings.serve_max_new_tokens
        slot = ModelSlot(settings, base_model, budget)
        shadow = ModelSlot(settings, base_model, budget, registry.CHALLENGER) if settings.shadow_share > 0 else None
        answerer = cls(settings, slot, InteractionLog(settings.interactions_db), k or settings.serve_k, shadow)
        _ = answerer.live.current()[2].embedder.fingerprint  # load the embedder and hash its weights now, not in a request
        return answerer

    def index_version(self) -> str:
        live, store, _ = self.live.current()
        return live.label(store.version()) if store.exists() else "none"

    def answer(self, question: str, user: str = "anonymous", groups: list[str] | None = None) -> Answer:
        """Retrieve within `groups` (public documents only when empty), generate, resolve citations, log."""
        if not question.strip():
            raise ValueError("the question is empty")
        return self._answer(question, user, groups, self.slot.get())

    def shadow(self, question: str, user: str, groups: list[str] | None, live_id: str) -> str | None:
        """Answer again with the challenger and log it as a shadow of `live_id` (never shown); its id, or None
        when there is no challenger other than the champion to shadow with."""
        model, champion = (self.shadow_slot.current if self.shadow_slot else None), self.slot.current
        if model is None or (champion is not None and model.version == champion.version):
            return None
        return self._answer(question, user, groups, model, shadow_of=live_id).id

    def _answer(
        self, question: str, user: str, groups: list[str] | None, model: LoadedModel, shadow_of: str | None = None
    ) -> Answer:
        started = time.perf_counter()
        live, store, retriever = self.live.current()
        index_version = live.label(store.version()) if store.exists() else "none"
        hits = retriever.search(question, k=self.k, groups=list(groups or []))
        declined = bool(hits) and self.below_floor(model, retriever.embedder, question, hits)
        retrieved = time.perf_counter()
        if declined:  # nothing served is near the question: the documents do not cover it
            text, cited, fallback, tokens = NOT_COVERED, [], False, 0
        elif hits:
            generation = model.generator.generate(question, [h.as_dict() for h in hits])
            text, cited, fallback, tokens = generation.answer, generation.citations, not generation.valid, generation.tokens
        else:  # nothing this caller may read matches: no model call can do better than saying so
            text, cited, fallback, tokens = NOT_COVERED, [], False, 0
        citations, dropped = resolve_citations(cited, hits)
        finished = time.perf_counter()
        record = {
            "user": user,
            "question": question,
            "answer": text,
            "citations": [{"doc_id": c.doc_id, "chunk_id": c.chunk_id} for c in citations],
            "model_version": model.version,
            "index_version": index_version,
            "latency_ms": round((finished - started) * 1000, 1),
            "retrieved": logged_context(hits),
            "fallback": fallback,
            "below_floor": declined,
            "shadow_of": shadow_of,
        }
        interaction_id, _ = self.interactions.append(record)
        return Answer(
            id=interaction_id,
            answer=text,
            citations=citations,
            model_version=model.version,
            index_version=index_version,
            latency_ms=record["latency_ms"],
            retrieval_ms=round((retrieved - started) * 1000, 1),
            generation_ms=round((finished - retrieved) * 1000, 1),
            fallback=fallback,
            retrieved=list(dict.fromkeys(h.doc_id for h in hits)),
            tokens=tokens,
            dropped_citations=dropped,
            below_floor=declined,
        )

    @staticmethod
    def below_floor(model: LoadedModel, embedder, question: str, hits: list[Hit]) -> bool:
        """The context is less related to the question than the model's floor; a floor measured with another
        embedder than the one serving does not apply."""
        floor = model.floor
        if floor is None or floor.embedder != embedder.fingerprint:
            return False
        return below(floor.value, relevance(embedder, question, [h.as_dict() for h in hits]))

    def feedback(
        self, interaction_id: str, rating: str | None, correction: str | None = None, citations: list[str] | None = None
    ) -> None:
        """Record up/down (and an optional corrected answer, and the documents that answer) on a logged
        interaction. KeyError if unknown; ValueError (RecordError) for a bad rating, or for documents the
        answer was not given from: an end user may only point at documents they were shown."""
        found = self.interactions.records(ids=[interaction_id])
        if not found:
            raise KeyError(f"no interaction with id {interaction_id!r}")
        outside = sorted(set(citations or ()) - {r["doc_id"] for r in found[0]["retrieved"] or ()})
        if outside:
            raise RecordError(f"citations name documents this answer was not given from: {', '.join(outside)}")
        self.interactions.add_feedback(interaction_id, rating, correction, citations)
