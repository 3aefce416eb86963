"""analysis: low-rank updates in, tidy DataFrames out (``tables`` per set of updates, ``sweep`` over
a sweep's runs, ``external`` for PEFT adapters). Opens no file: ``workflow`` reads and writes."""
