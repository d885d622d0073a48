"""The streaming side of Foresight: the Faust app, agents, tables, batching, scoring, CLI."""
