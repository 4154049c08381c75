"""The Hospital Directory API: one method per endpoint, failure kinds, retry policy."""
