"""Features: aggregation compiler, gold tables, point-in-time joins, online state.

One aggregation declaration is compiled to DuckDB SQL (gold, training sets)
and evaluated online over an entity's events (SQLite or Redis state).
"""
