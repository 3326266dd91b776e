"""The one test harness: daemon launcher, moto server, clock, waiting, TOML, HTTP and metrics."""
