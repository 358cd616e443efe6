"""The relevance floor: measured on in-scope questions, kept with an adapter version, applied when serving.

Real embedder, LanceDB index, MLflow registry and base model; the floor's arithmetic on hand-checked values.
"""

import pytest
from conftest import make_adapter, register_versions, small_served_home

from evaluation.intervals import mean_interval
from ragtune import registry
from ragtune.behaviour.answer_flags import flags
from ragtune.behaviour.interactions import InteractionLog
from ragtune.knowledge.relevance import (
    DROPPED_TAG,
    MIN_QUESTIONS,
    RelevanceFloor,
    below,
    calibrate,
    relevance,
    served_floor,
    tagged_floor,
    transfers,
)
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.llm.prompting import NOT_COVERED
from ragtune.serving.answerer import Answerer, ModelSlot

IN_SCOPE = "How can I classify images with a vision transformer?"
OFF_TOPIC = "Which wine goes best with grilled salmon at a summer wedding?"


def test_the_floor_is_the_quantile_and_needs_enough_questions():
    values = [i / 100 for i in range(100)]
    floor = calibrate(values, 0.05, "emb")
    assert floor.value == 0.05 and floor.questions == 100 and sum(below(floor.value, v) for v in values) == 5
    assert calibrate(values[: MIN_QUESTIONS - 1], 0.05, "emb") is None
    assert calibrate([None] * 50 + values[: MIN_QUESTIONS - 1], 0.05, "emb") is None  # a missing context is no evidence
    assert calibrate(values, 0.0, "emb") is None  # floors off
    assert RelevanceFloor.from_tags({"dataset_hash": "x", **floor.tags()}) == floor
    assert RelevanceFloor.from_tags({"relevance_floor_value": "high"}) is None
    assert below(0.3, 0.29) and not below(0.3, 0.3) and not below(None, -1.0) and not below(0.3, None)
    tags = {"dataset_hash": "x", **floor.tags()}  # a version's tags, as the registry returns them
    assert served_floor(tags, True, "emb") == floor
    assert served_floor(tags, False, "emb") is None  # RAGTUNE_RELEVANCE_FLOOR_QUANTILE=0: floors off
    assert served_floor(tags, True, "another") is None  # measured with another embedder than the one serving
    assert served_floor({"dataset_hash": "x"}, True, "emb") is None  # a version from before floors
    assert served_floor({**tags, DROPPED_TAG: "declines 19 of 24"}, True, "emb") is None  # did not transfer
    assert tagged_floor(tags, True) == floor and tagged_floor({**tags, DROPPED_TAG: "x"}, True) is None
    assert tagged_floor(tags, False) is None  # what serving loads; the embedder is checked per request
    # transfer: judged by the lower bound of the held-out decline share's interval against the quantile
    assert transfers(floor, mean_interval([0.0] * 23 + [1.0]).low) and transfers(floor, None)
    assert not transfers(floor, mean_interval([1.0] * 19 + [0.0] * 5).low)  # the release-loop corpus
    assert transfers(floor, mean_interval([1.0] * 5 + [0.0] * 37).low)  # HuggingFace: low 0.052, within the tolerance
    assert not transfers(floor, mean_interval([1.0] * 10 + [0.0] * 32).low)  # shown to decline over DECLINE_TOLERANCE


def test_a_floor_decline_is_flagged_apart_from_the_models_abstention():
    declined = {"answer": NOT_COVERED, "below_floor": True, "retrieved": [{"doc_id": "a"}], "citations": []}
    seen = flags(declined)  # the caller was told "not covered"; the model was not asked, so its flags are unknown
    assert seen["below_floor"] and seen["not_covered"] and seen["abstained"] is None and seen["valid_citation"] is None
    said = flags({**declined, "below_floor": False})
    assert said["abstained"] and said["not_covered"] and not said["below_floor"] and said["valid_citation"] is False


@pytest.fixture(scope="module")
def home(tmp_path_factory, embedder, base_model):
    root = tmp_path_factory.mktemp("floor")
    settings = small_served_home(root, embedder, base_model, 12)
    return root, settings, Retriever(ChunkStore(settings.lancedb_uri, settings.table_name, embedder.dim), embedder)


def test_relevance_is_the_vector_searchs_similarity_and_computes_the_same_where_it_lacks_one(home, embedder):
    _, _, retriever = home
    hits = [h.as_dict() for h in retriever.search(IN_SCOPE, k=3, mode="vector")]
    assert all(h["similarity"] is not None for h in hits)
    assert relevance(embedder, IN_SCOPE, hits) == max(h["similarity"] for h in hits)
    unscored = [{**h, "similarity": None} for h in hits]  # as full-text search or a hand-built context gives them
    assert relevance(embedder, IN_SCOPE, unscored) == pytest.approx(max(h["similarity"] for h in hits), abs=1e-4)
    assert relevance(embedder, IN_SCOPE, []) is None


def test_serving_declines_below_the_champions_floor_without_generating(home, embedder, base_model):
    root, settings, retriever = home

    def related(question: str) -> float:
        return relevance(embedder, question, [h.as_dict() for h in retriever.search(question, k=settings.serve_k)])

    near, far = related(IN_SCOPE), related(OFF_TOPIC)
    assert far < near, "the fixture's off-topic question must be the less related one"
    adapter = make_adapter(base_model, root / "adapter")
    measured, foreign = register_versions(settings, ["a", "b"], root / "unused", adapter=adapter)
    floor = RelevanceFloor(value=(near + far) / 2, quantile=0.05, questions=40, embedder=embedder.fingerprint)
    registry.tag_version(settings.tracking_uri, settings.registered_model, measured, floor.tags())
    other = RelevanceFloor(value=floor.value, quantile=0.05, questions=40, embedder="another-embedder")
    registry.tag_version(settings.tracking_uri, settings.registered_model, foreign, other.tags())

    slot = ModelSlot(settings, str(base_model), max_new_tokens=32)
    log = InteractionLog(settings.interactions_db)
    answerer = Answerer(settings, slot, log, k=settings.serve_k)
    registry.promote(settings.tracking_uri, settings.registered_model, measured, reason="test")
    assert slot.sync() and slot.current.floor == floor

    declined = answerer.answer(OFF_TOPIC, user="t")
    assert declined.below_floor and declined.answer == NOT_COVERED and declined.tokens == 0 and not declined.citations
    logged = log.records(ids=[declined.id])[0]
    assert logged["answer"] == NOT_COVERED and logged["below_floor"] is True  # logged, and why
    answered = answerer.answer(IN_SCOPE, user="t")
    assert not answered.below_floor and answered.tokens > 0
    # an evaluation drops the floor of the version already loaded: the next sync serves it without one
    registry.tag_version(settings.tracking_uri, settings.registered_model, measured, {DROPPED_TAG: "declines 19 of 24"})
    assert not slot.sync() and slot.current.floor is None and slot.current.version == measured
    assert not answerer.answer(OFF_TOPIC, user="t").below_floor

    registry.promote(settings.tracking_uri, settings.registered_model, foreign, reason="test")
    assert slot.sync() and slot.current.floor == other
    asked = answerer.answer(OFF_TOPIC, user="t")  # measured with another embedder: the floor does not apply
    assert not asked.below_floor and asked.tokens > 0
