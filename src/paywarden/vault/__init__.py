"""The card vault: the card data environment (CDE).

A separate process with its own database, reachable only over mutual TLS. It is
the only place a card number exists in clear, and only while it is validated,
sealed, or forwarded to an acquirer.
"""
