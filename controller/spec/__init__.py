"""What a deployment file may say: pydantic models (`models`), YAML read with line marks
(`yamldoc`), files to validated specs (`manifest`), and the generated JSON Schema and reference
(`schema`)."""
