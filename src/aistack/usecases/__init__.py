"""Reference use cases shipped with AI Stack, each registered as an entry point."""
