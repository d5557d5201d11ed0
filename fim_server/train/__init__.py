"""Training the bundled twins (`fim-server train`): data (sources, FIM examples) and the recipe."""
