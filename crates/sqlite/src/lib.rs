//! # ackflow-sqlite
