"""Experiments: several arms (vanilla, meta, …) × seeds on the same data, evaluated and compared
(`spec` the file format, `runner` the orchestration, `compare` the DESIGN 2.6 measures, `report`
the report)."""
