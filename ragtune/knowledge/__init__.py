"""The knowledge layer: documents, chunks, embeddings, the LanceDB index and retrieval."""
