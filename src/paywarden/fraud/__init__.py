"""Fraud engine: signals, velocity counters, rules, risk score and decisions before funds move."""
