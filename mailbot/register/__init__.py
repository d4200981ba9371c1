"""The register: the schema, its models, the queries the rules and the workflow ask, the CRM's data and the stored files."""
