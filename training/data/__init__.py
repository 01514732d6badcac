"""Input data: the data-directory format, the ML-100K fetcher and a synthetic generator."""
