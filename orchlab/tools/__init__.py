"""Tools: one model of function calling across providers, Python functions as tools, toolsets, and
`delegate`, the loop that runs the tools a model asks for.

- `orchlab.tools.model`: `Tool`, `ToolCall`, `ToolResult` (plain frozen values, no pydantic);
- `orchlab.tools.functions`: ``@orchlab.tool`` and plain functions as tools (schema and argument
  validation by pydantic);
- `orchlab.tools.toolsets`: the YAML ``toolsets:`` (importable ``package.module:function`` names);
- `orchlab.tools.delegate`: ``client.delegate(task, role=..., tools=..., max_steps=8)``.
"""
