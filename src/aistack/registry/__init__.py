"""Model versions, champion/challenger aliases with their history, rollout state."""
