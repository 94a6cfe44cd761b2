"""acquirers."""
