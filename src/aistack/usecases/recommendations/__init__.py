"""Recommendations reference use case: MovieLens, six models, RecBole's protocol."""
