"""Storage: the embedded Tiled server, the live raw-run writer and the analysis results in Tiled."""
