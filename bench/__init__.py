"""`make bench`: keysvc's throughput and latency, each figure as a ratio to a limit measured
in the same run on the same cores (see docs/performance.md)."""
