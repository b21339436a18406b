"""Where stages run: embedded (DuckDB in this process) or a Dask cluster.

A stage splits its work into entity-hash partitions and runs one plain function per
partition through `Engine.map`; on a cluster each call runs in a worker process.
Partitioning by entity keeps windows and point-in-time joins exact: every row an
entity's feature needs lives in the entity's partition. Workers write Parquet
files, and the stage records them in one Delta commit (`Lake.commit_files`).
"""

from aistack.engine.cluster import DaskEngine, EmbeddedEngine, Engine, open_engine
from aistack.engine.partitions import partition_of, split_rows

__all__ = [
    "DaskEngine",
    "EmbeddedEngine",
    "Engine",
    "open_engine",
    "partition_of",
    "split_rows",
]
