"""Institution policies: schema, loading, the combined run plan and decisions."""
