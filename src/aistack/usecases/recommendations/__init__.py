"""Recommendations reference use case: MovieLens, seven models, RecBole's protocol."""
