"""Worker drills."""
