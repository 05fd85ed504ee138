//! # ackflow-http
