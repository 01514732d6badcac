"""The Faiss IVF-PQ item index: parameters, build, artifact layout, verified loading."""
