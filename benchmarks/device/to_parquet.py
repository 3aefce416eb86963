"""Every analysis table (SWEEP/analysis/*.csv) of the sweeps under RUNS beside itself as Parquet
(zstd), for the trip back from the device machine: python to_parquet.py RUNS"""

import sys
from pathlib import Path

from lowrank_lab.store import exported

for csv in sorted(Path(sys.argv[1]).glob("*/analysis/*.csv")):
    parquet = exported.parquet_copy(csv)  # "" stays "", integers stay integers
    print(csv.relative_to(sys.argv[1]), "->", parquet.name, parquet.stat().st_size, "bytes")
