"""The latency model of a plan: table sums, calibrated against measured whole models."""
