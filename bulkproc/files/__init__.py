"""Bytes to rows: the file rules, and the result files people fix and send again."""
