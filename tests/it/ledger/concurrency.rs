//! Concurrency on PostgreSQL (many connections, real row locks).
