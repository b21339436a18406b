"""Request scoring (features, model, state update), inference paths, the
prediction log, batch scoring and the stream consumer.
"""
