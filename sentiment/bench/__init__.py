"""The benchmark wing: commands that measure on purpose and print numbers (never part of the
tests): throughput and the engine race, serving latency, what each lever of a study moved."""
