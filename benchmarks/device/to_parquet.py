"""Every analysis table (SWEEP/analysis/*.csv) of the sweeps under RUNS beside itself as Parquet
(zstd), for the trip back from the device machine: python to_parquet.py RUNS"""

import sys
from pathlib import Path

from lowrank_lab.store.tables import read_csv_table

for csv in sorted(Path(sys.argv[1]).glob("*/analysis/*.csv")):
    table = read_csv_table(csv)  # "" stays "", integers stay integers
    table.to_parquet(csv.with_suffix(".parquet"), compression="zstd", index=False)
    print(csv.relative_to(sys.argv[1]), len(table), "rows", csv.with_suffix(".parquet").stat().st_size, "bytes")
