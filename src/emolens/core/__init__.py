"""What every layer stands on: settings, errors, file writing, threads, lazy imports. Imports
nothing else of EmoLens."""
