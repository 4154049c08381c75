"""bulkproc: the Hospital Bulk Processor."""
