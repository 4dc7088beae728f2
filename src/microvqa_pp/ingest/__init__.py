"""Stage `ingest`: figures from sources, validated, selected and de-duplicated."""
