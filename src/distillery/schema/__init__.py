"""The records and formats every stage speaks: queries, traces, responses, AM/messages layouts, strict JSON.

The ground floor of the package: it imports nothing of distillery but itself."""
