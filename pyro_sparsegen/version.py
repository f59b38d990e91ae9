"""The package version (imports nothing)."""

VERSION = "0.2.0"
