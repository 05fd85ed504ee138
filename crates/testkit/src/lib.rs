//! # ackflow-testkit
