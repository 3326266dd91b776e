"""The one test harness: daemon launcher, moto server, waiting, TOML values, HTTP and metrics."""
