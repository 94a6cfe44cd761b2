"""acquirer_sandbox."""
