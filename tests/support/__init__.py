"""What tests share: objects they build and helpers they call (no tests here)."""
