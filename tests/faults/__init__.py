"""Fault injection: crashes, races, clock jumps, outages, bad input and secrets."""
