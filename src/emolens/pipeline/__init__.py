"""The analysis itself: ``Analyzer`` (detect → align → classify) and the results it returns, one
face record per face."""
