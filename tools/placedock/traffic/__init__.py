"""Traffic through a front door: the ledger that counts it, perfload (the benchmark data set), the timed mixes."""
