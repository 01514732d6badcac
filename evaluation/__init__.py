"""Offline evaluation: `recall evaluate`.

Splits (P1: RecBole's random 80/10/10, P2: temporal leave-last-one-out), ranking metrics,
numpy baselines (Pop, ItemKNN, EASE), the model under test scored by exact search over its
vectors and through a real recall server over gRPC, and a Markdown report with plots.

Depends on ``training`` (to train the model under test) and ``serving`` (to serve it);
neither of them imports this package.
"""
