"""One module per published lineage; each registers its layouts with models.published on import."""
