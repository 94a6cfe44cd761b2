"""Domain-free building blocks: errors, ids, money, secret types, clock."""
