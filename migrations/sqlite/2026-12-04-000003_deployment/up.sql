-- One row: this deployment's identity. Its key prefix keeps the objects of deployments
-- that share a bucket (or a data directory) apart, so that one's orphan sweep never
-- removes another's files.
CREATE TABLE deployment (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_prefix TEXT NOT NULL
);
