"""A corpus written in house jargon, asked about in plain words: where an off-the-shelf embedder misses.

Every document is about one (action, object) pair, named with the organisation's own terms ("file a
clawback on a slab" for "get a refund for a laptop"). Users ask in plain words. The vocabulary is
consistent across documents, so an embedder that learns it from some documents' questions finds
the documents it never saw in training: the held-out split is by document.
"""

import json
from pathlib import Path

ACTIONS = [  # plain words, jargon
    ("get a refund for", "file a clawback on"),
    ("order a new", "raise a provisioning chit for a"),
    ("report a broken", "open a redline against the"),
    ("return my", "hand back the"),
    ("insure my", "enrol in the aegis plan the"),
    ("borrow a", "sign out a loaner"),
    ("upgrade my", "request uplift for the"),
    ("recycle an old", "decommission via the graveyard queue the"),
]
OBJECTS = [
    ("laptop", "slab"),
    ("phone", "pocket unit"),
    ("monitor", "glass panel"),
    ("headset", "ear rig"),
    ("keyboard", "key deck"),
    ("desk chair", "seating asset"),
    ("badge", "door token"),
    ("printer", "ink box"),
]
QUESTIONS = [
    "How do I {action} {object}?",
    "I need to {action} {object}, what is the process?",
    "What are the steps to {action} {object}?",
]
PORTALS = ["Orbit", "Keel", "Lumen", "Quarry", "Vesper", "Thicket", "Marrow", "Tallis"]


def doc_id(a: int, o: int) -> str:
    return f"proc-{a}-{o}.md"


def document(a: int, o: int) -> str:
    action, thing = ACTIONS[a][1], OBJECTS[o][1]
    portal = PORTALS[(a + o) % len(PORTALS)]
    return (
        f"# Procedure {a}{o}: {action} {thing}\n\n"
        f"To {action} {thing}, sign in to {portal} and pick form {a * 10 + o}. "
        f"Attach the asset tag of the {thing}, state the cost centre, and submit. "
        f"The {portal} desk confirms within two working days."
    )


def write_corpus(root: Path) -> dict:
    """docs/*.md and interactions.jsonl (three approved questions per document, citing it)."""
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    records = []
    for a in range(len(ACTIONS)):
        for o in range(len(OBJECTS)):
            (docs / doc_id(a, o)).write_text(document(a, o))
            for q, template in enumerate(QUESTIONS):
                question = template.format(action=ACTIONS[a][0], object=OBJECTS[o][0])
                records.append(
                    {
                        "id": f"j-{a}-{o}-{q}",
                        "user": f"user{(a + o + q) % 7}",
                        "question": question,
                        "answer": f"Use form {a * 10 + o} in {PORTALS[(a + o) % len(PORTALS)]} [{doc_id(a, o)}].",
                        "citations": [{"doc_id": doc_id(a, o)}],
                        "feedback": "up",
                    }
                )
    path = root / "interactions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"docs": docs, "interactions": path, "records": records}
