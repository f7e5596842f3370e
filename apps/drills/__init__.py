"""Reliability and security drills (issue #10): load, outages, kills and bad input against real processes."""
