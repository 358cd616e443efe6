"""A small model catalogue in APIBench's document shape, short enough to train and evaluate on in minutes.

Each of 24 tasks gets one document (a fictional model id, what it does, its API call), one
training interaction (a user asking for it, answered with the call and citing the document) and
one held-out evaluation item phrased differently. Short documents keep prompts near 300 tokens,
so the release loop runs with real training and generation inside the test budget.
"""

import json
from pathlib import Path

TASKS = [
    (
        "text-classification",
        "spam detection in e-mails",
        "flag spam e-mails in our support inbox",
        "Which model filters junk mail out of an inbox?",
    ),
    (
        "translation",
        "translation from English to German",
        "translate product pages from English into German",
        "I have English text and need it in German.",
    ),
    (
        "image-classification",
        "bird species recognition in photos",
        "recognise the bird species in hikers' photos",
        "Identify which bird appears in a picture.",
    ),
    (
        "summarization",
        "summaries of legal contracts",
        "summarise long legal contracts for our lawyers",
        "Condense a contract into a short summary.",
    ),
    (
        "automatic-speech-recognition",
        "transcription of Dutch speech",
        "transcribe Dutch voice notes to text",
        "Turn spoken Dutch audio into written text.",
    ),
    (
        "token-classification",
        "extraction of drug names from clinical notes",
        "pull medication names out of clinical notes",
        "Find the drugs mentioned in a doctor's notes.",
    ),
    (
        "object-detection",
        "detection of potholes in road images",
        "spot potholes in dashcam road images",
        "Locate damaged road surface in street photos.",
    ),
    ("text-generation", "writing haiku poems", "write short haiku poems on a theme", "Compose a haiku for me."),
    (
        "question-answering",
        "answers from insurance policies",
        "answer customer questions from insurance policy text",
        "Read a policy document and answer questions on it.",
    ),
    (
        "image-segmentation",
        "segmentation of tumours in MRI scans",
        "outline tumours in MRI brain scans",
        "Mark the tumour region in a medical scan.",
    ),
    (
        "text-classification",
        "sentiment of restaurant reviews",
        "tell whether restaurant reviews are positive or negative",
        "Is this review of a diner happy or unhappy?",
    ),
    (
        "audio-classification",
        "recognition of dog barks in audio",
        "detect dogs barking in home audio recordings",
        "Notice when a dog barks in a recording.",
    ),
    (
        "translation",
        "translation from Japanese to English",
        "translate Japanese manga dialogue into English",
        "Convert Japanese sentences to English.",
    ),
    (
        "zero-shot-classification",
        "routing support tickets by topic",
        "route support tickets to billing, shipping or returns",
        "Sort incoming tickets into departments without training data.",
    ),
    (
        "depth-estimation",
        "depth maps from single photos",
        "estimate how far objects are from the camera in one photo",
        "Produce a depth map from a single image.",
    ),
    (
        "text-to-speech",
        "speech synthesis in Spanish",
        "read Spanish news articles aloud",
        "Generate spoken Spanish audio from text.",
    ),
    (
        "tabular-classification",
        "prediction of loan defaults",
        "predict which loan applicants will default",
        "Score credit applications for default risk.",
    ),
    (
        "feature-extraction",
        "embeddings for code search",
        "embed source code snippets for semantic code search",
        "Vectorise functions so similar code can be found.",
    ),
    (
        "image-to-text",
        "captions for product photos",
        "write captions for our product photos",
        "Describe an item's picture in a sentence.",
    ),
    (
        "fill-mask",
        "completion of masked chemistry terms",
        "fill in masked words in chemistry papers",
        "Predict the hidden word in a chemistry sentence.",
    ),
    (
        "video-classification",
        "recognition of gym exercises in videos",
        "recognise which exercise people do in gym videos",
        "Label the workout shown in a clip.",
    ),
    (
        "text-classification",
        "detection of toxic comments",
        "catch toxic comments on our forum",
        "Moderate abusive forum posts automatically.",
    ),
    (
        "summarization",
        "headlines for news articles",
        "generate a headline for each news article",
        "Give a news story a short title.",
    ),
    (
        "conversational",
        "a friendly customer-service chatbot",
        "run a polite customer-service chat assistant",
        "Chat with shoppers about their orders.",
    ),
]


def model_id(index: int) -> str:
    return f"loopbench/{TASKS[index][1].split(' ')[0].lower()}-{index:02d}"


def write_corpus(root: Path) -> dict:
    """docs/, interactions.jsonl, eval.jsonl under `root`; returns their paths."""
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    interactions, evals = [], []
    for i, (pipeline_task, what, need, paraphrase) in enumerate(TASKS):
        mid = model_id(i)
        call = f"pipeline('{pipeline_task}', model='{mid}')"
        (docs / f"model-{i:02d}.md").write_text(
            f"---\nid: {mid}\ntitle: {mid}\n---\n# {mid}\n\nA model for {what}.\n\n## API call\n\n`{call}`\n"
        )
        answer = f"Use {call}. It is a model for {what}."
        interactions.append(
            {
                "id": f"loop-{i:02d}",
                "ts": "2026-01-01T00:00:00+00:00",
                "user": f"user{i % 4}",
                "question": f"We need to {need}. Which model and API call should we use?",
                "answer": answer,
                "citations": [{"doc_id": mid, "chunk_id": None}],
                "feedback": "up",
                "correction": None,
            }
        )
        evals.append(
            {
                "id": f"loop-eval-{i:02d}",
                "question": paraphrase,
                "reference_answer": answer,
                "gold_doc_ids": [mid],
                "answerable": True,
                "identifier": call,
            }
        )
    paths = {"docs": docs, "interactions": root / "interactions.jsonl", "eval": root / "eval.jsonl"}
    paths["interactions"].write_text("".join(json.dumps(r) + "\n" for r in interactions))
    paths["eval"].write_text("".join(json.dumps(r) + "\n" for r in evals))
    return paths


def sabotage(interactions: Path, out: Path) -> Path:
    """The same interactions with answers and citations shuffled across questions (each gets its neighbour's)."""
    rows = [json.loads(line) for line in interactions.read_text().splitlines()]
    shifted = rows[1:] + rows[:1]
    bad = [{**r, "id": f"{r['id']}-sabotaged", "answer": s["answer"], "citations": s["citations"]} for r, s in zip(rows, shifted)]
    out.write_text("".join(json.dumps(r) + "\n" for r in bad))
    return out
