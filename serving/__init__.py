"""Serving side: the Faiss index artifact, Redis user vectors and the gRPC recall servers.

Never imports ``training`` or ``pipelines``, and never imports TensorFlow at import time.
"""
