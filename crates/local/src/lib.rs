//! # ackflow-local
