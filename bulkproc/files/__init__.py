"""Bytes to rows: what a file is and how to read it (text, workbooks), its header, the file rules, and the
result files people fix and send again."""
