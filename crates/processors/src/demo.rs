//! The `demo` kind.
