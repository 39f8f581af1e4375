"""The sections of a spec, one module per top-level key group."""
