"""The challenger's live-traffic table: shadow answers paired with the champion's answers to the same questions."""

from evaluation.live_traffic import live_traffic, live_traffic_markdown, shadow_pairs
from ragtune.behaviour.answer_flags import agree
from ragtune.llm.prompting import NOT_COVERED


def answer(n, text="Use org/x.", cited=("x",), version="1", shadow_of=None, latency=1000.0, fallback=False, floor=False):
    return {
        "below_floor": floor,
        "id": f"{'s' if shadow_of else 'l'}{n}",
        "question": f"question {n}",
        "answer": text,
        "citations": [{"doc_id": d} for d in cited],
        "retrieved": [{"doc_id": "x"}, {"doc_id": "y"}],
        "model_version": version,
        "shadow_of": shadow_of,
        "latency_ms": latency,
        "fallback": fallback,
    }


def test_answers_agree_on_the_call_and_the_documents_not_the_wording():
    assert agree(answer(1, "Use org/x."), answer(2, "You can load org/x with the pipeline."))
    assert not agree(answer(1), answer(2, cited=("y",)))  # another document
    assert not agree(answer(1), answer(2, NOT_COVERED, cited=()))  # abstained instead
    assert agree(answer(1, NOT_COVERED, cited=()), answer(2, "The documents do not cover this.", cited=()))


def test_the_live_traffic_table_pairs_each_shadow_with_its_live_answer():
    records = []
    for n in range(40):
        records.append(answer(n, latency=1000.0))
        # 10 of 40: the challenger says "not covered" where the champion answered; 5 of them its floor declined
        disagree = n % 4 == 0
        records.append(
            answer(
                n,
                NOT_COVERED if disagree else "Load org/x.",
                cited=() if disagree else ("x",),
                version="2",
                shadow_of=f"l{n}",
                latency=1500.0,
                floor=n % 8 == 0,
            )
        )
    records.append(answer(99, version="3", shadow_of="l1"))  # another version's shadow: not this table's
    records.append(answer(98, version="2", shadow_of="gone"))  # its live answer is not in the records
    assert len(shadow_pairs(records, "2")) == 40
    table = live_traffic(records, "2")
    assert table["pairs"] == 40 and table["champion_versions"] == ["1"]
    assert table["agreement"]["mean"] == 0.75 and table["agreement"]["low"] < 0.75 < table["agreement"]["high"]
    told = table["metrics"]["not_covered"]  # what the caller was told, by the model or the floor
    assert (told["champion"], told["challenger"], told["method"]) == (0.0, 0.25, "newcombe")
    assert told["low"] > 0  # shown to say "not covered" more
    assert (table["metrics"]["below_floor"]["challenger"], table["metrics"]["below_floor"]["n"]) == (0.125, 40)
    citations = table["metrics"]["valid_citation"]  # where the model was asked: floor declines left out
    assert (citations["champion"], citations["challenger"], citations["n"]) == (1.0, 30 / 35, 35)
    latency = table["metrics"]["latency_ms"]
    assert latency["diff"] == 500.0 and latency["p50"] == {"champion": 1000.0, "challenger": 1500.0}
    assert len(table["disagreements"]) == 10 and table["disagreements"][0]["challenger_cited"] == []
    text = live_traffic_markdown(table)
    assert "answered 40 live questions" in text and "| not_covered | 0.00 | 0.25 |" in text


def test_no_shadow_answers_says_how_to_collect_them():
    table = live_traffic([answer(1)], "2")
    assert table == {"challenger": "2", "pairs": 0}
    assert "RAGTUNE_SHADOW_SHARE" in live_traffic_markdown(table)
