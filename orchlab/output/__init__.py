"""What shape an answer comes back in (OutputSmith).

- `orchlab.output.structured`: ``output=MyModel`` asks for a validated pydantic instance
  (``response.output``), through each provider's native mechanism where it has one.
- `orchlab.output.formats`: ``format="raw" | "markdown" | "json"`` and formatters a user adds.

Nothing here imports a provider SDK or anything above `orchlab.types`.
"""
